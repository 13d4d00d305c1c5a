import Foundation
import PandoLedger
import PandoTraining

/// One round's DP-SGD at one school: what the accountant needs to compute its ε.
public struct PrivacySpend: Sendable, Equatable {
    public var round: Int
    public var samplingRate: Double
    public var noiseMultiplier: Double
    public var steps: Int
    public var maxGradientNorm: Double

    public init(round: Int, samplingRate: Double, noiseMultiplier: Double, steps: Int, maxGradientNorm: Double) {
        self.round = round
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.steps = steps
        self.maxGradientNorm = maxGradientNorm
    }

    /// The spend an update's metrics report (`LocalUpdater` writes them), or nil without DP.
    public init?(round: Int, metrics: [String: Double]) {
        guard let q = metrics["dp_sampling_rate"], let sigma = metrics["dp_noise_multiplier"], let steps = metrics["dp_steps"],
              let clip = metrics["dp_max_gradient_norm"] else { return nil }
        guard let steps = wholeCount(steps) else { return nil }
        self.init(round: round, samplingRate: q, noiseMultiplier: sigma, steps: steps, maxGradientNorm: clip)
    }

    /// The spend an audit record's `privacy` field holds, or nil.
    public init?(auditFields f: [String: CanonicalJSON], round: Int) {
        guard let q = f["samplingRate"]?.doubleValue, let sigma = f["noiseMultiplier"]?.doubleValue,
              let steps = f["steps"]?.doubleValue.flatMap(wholeCount), let clip = f["maxGradientNorm"]?.doubleValue else { return nil }
        self.init(round: round, samplingRate: q, noiseMultiplier: sigma, steps: steps, maxGradientNorm: clip)
    }
}

/// A school's differential-privacy budget (`privacy:` in school.yaml): the school is the data
/// owner, so it accounts every round it takes part in and declines one that would exceed it.
public struct SchoolPrivacyBudget: Sendable, Equatable {
    public var targetEpsilon: Double
    public var delta: Double
    /// The school's own per-example clip; nil takes the plan's.
    public var maxGradientNorm: Float?
    public init(targetEpsilon: Double, delta: Double = 1e-5, maxGradientNorm: Float? = nil) {
        self.targetEpsilon = targetEpsilon
        self.delta = delta
        self.maxGradientNorm = maxGradientNorm
    }
}

/// The ε of a sequence of spends, composed in RDP (Mironov 2017: RDP adds up over
/// mechanisms at every order) and converted once at `delta`.
public enum PrivacyAccounting {
    public static func epsilon(_ spends: [PrivacySpend], delta: Double) throws -> Double {
        var accountant = RDPAccountant()
        for s in spends { try accountant.compose(samplingRate: s.samplingRate, noiseMultiplier: s.noiseMultiplier, steps: s.steps) }
        return accountant.epsilon(delta: delta).epsilon
    }

    /// ε of recorded spends, for `AuditVerifier.verify(privacy:)`; nil when the accountant refuses them.
    public static let recordedEpsilon: AuditVerifier.EpsilonOfSpends = { spends, delta in
        try? epsilon(spends.enumerated().map { PrivacySpend(round: $0.offset, samplingRate: $0.element.samplingRate,
                                                            noiseMultiplier: $0.element.noiseMultiplier, steps: $0.element.steps,
                                                            maxGradientNorm: 0) }, delta: delta)
    }

    /// The metrics a school reports with an update under DP: the round's spend (already in
    /// `metrics`), δ, this round's ε alone, ε over all its spends so far, and their count.
    public static func report(into metrics: inout [String: Double], delta: Double, roundEpsilon: Double, totalEpsilon: Double, spends: Int) {
        metrics["dp_delta"] = delta
        metrics["dp_epsilon"] = roundEpsilon
        metrics["dp_epsilon_total"] = totalEpsilon
        metrics["dp_spends"] = Double(spends)
    }

    /// The audit's `privacy` field for an update whose metrics carry a DP report, or nil.
    public static func auditFields(from metrics: [String: Double]) -> [String: CanonicalJSON]? {
        guard let q = metrics["dp_sampling_rate"], let sigma = metrics["dp_noise_multiplier"], let steps = metrics["dp_steps"],
              let clip = metrics["dp_max_gradient_norm"], let delta = metrics["dp_delta"], let e = metrics["dp_epsilon"],
              let total = metrics["dp_epsilon_total"], let spends = metrics["dp_spends"],
              let stepCount = wholeCount(steps), let spendCount = wholeCount(spends) else { return nil }
        return [
            "mechanism": .string("dp-sgd"), "accountant": .string("rdp"),
            "samplingRate": .double(q), "noiseMultiplier": .double(sigma), "steps": .int(stepCount),
            "maxGradientNorm": .double(clip), "delta": .double(delta), "epsilon": .double(e),
            "epsilonTotal": .double(total), "spends": .int(spendCount),
        ]
    }
}

/// A count a peer reported as a double: a whole number below 2⁵³, else nil (never a trap).
func wholeCount(_ x: Double) -> Int? {
    guard x.isFinite, x >= 0, x < 0x1p53, x.rounded() == x else { return nil }
    return Int(x)
}
