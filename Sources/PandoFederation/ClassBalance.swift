import Foundation
import PandoData
import PandoTraining

/// How a school's local loss treats its own label skew (classification only).
///
/// Under label skew a class most schools have none of is pushed down on every example those
/// schools train on, and the average forgets it (the rare-class problem of federated
/// classification). Each setting but `weighted-global` works from the school's own counts alone,
/// so the coordinator learns nothing new about any school's labels; `weighted-global` uses the
/// district's class prior, summed under secure aggregation so that only the total is seen.
public enum ClassBalance: String, Sendable, Codable, CaseIterable {
    case none
    /// Loss weights n / (k · n_c) from the school's own counts ("balanced"; absent classes 0).
    case weighted
    /// Random oversampling of the school's smaller classes up to its largest, redrawn each
    /// epoch (an epoch then has more updates).
    case oversampled
    /// Softmax over the classes the school has (restricted softmax, FedRS with α = 0): a class
    /// absent from the school gets no gradient there instead of being pushed down on every
    /// example; the rest is plain cross-entropy.
    case presentClasses = "present-classes"
    /// Logit adjustment by the school's own prior in the training loss (balanced softmax,
    /// Ren et al. 2020; FedLC): logits + log(n_c / n), −∞ for absent classes, so local training
    /// does not learn the school's label skew into the head.
    case priorAdjusted = "prior-adjusted"
    /// `weighted` and `present-classes` together: balanced weights, and a softmax over the classes
    /// the school has (for skews where some schools lack classes altogether). Last, since the wire
    /// carries the index in `allCases`.
    case weightedPresentClasses = "weighted-present-classes"
    /// Loss weights 1 / (k · p_c) from the district's class prior p: the centralized weighted
    /// loss, split among the schools, rather than each school's own balance (which gives a class
    /// a school has 3 examples of a weight in the hundreds). In the first round each school adds its
    /// label fractions to its masked update (the last k values,
    /// ``LocalTrainingPlan/censusLength(classCount:)``); the unmasked mean is the prior, which the
    /// coordinator records in that round's audit record and sends in every later plan
    /// (``LocalTrainingPlan/classPrior``). That round itself uses the school's own counts, as
    /// `weighted`. Needs secure aggregation: the fractions in the clear would show each school's
    /// label mix. A school adds them to one sum only: label mixes do not change, so two sums over
    /// different schools would give away the difference.
    case weightedGlobal = "weighted-global"

    /// The most classes `weighted-global` takes: its prior rides in the assignment's parameter map.
    public static let maxGlobalClasses = 200

    /// Whether a school's update shows which classes it has none of: with these, a class left out
    /// of the softmax leaves the head's bias for it exactly unchanged. Allowed only under secure
    /// aggregation, where the coordinator sees the sum alone.
    public var revealsAbsentClasses: Bool { self == .presentClasses || self == .weightedPresentClasses || self == .priorAdjusted }

    /// Whether an update in the clear would say something about the school's labels beyond its
    /// size: these settings are accepted only with secure aggregation.
    public var needsSecureAggregation: Bool { revealsAbsentClasses || self == .weightedGlobal }

    /// The school's label fractions c / n, which the weighted sum of secure aggregation turns
    /// into the district's prior (each ≤ 1, within any clip of the fixed-point encoding).
    public static func census(classes: [Int], classCount: Int) -> [Float] {
        var counts = [Int](repeating: 0, count: classCount)
        for c in classes { counts[c] += 1 }
        return counts.map { classes.isEmpty ? 0 : Float($0) / Float(classes.count) }
    }

    /// The prior from the unmasked mean of the schools' fractions. Honest fractions sum to 1 at
    /// every school, so the mean does too, up to fixed-point error (far below 1e-3); a mean off by
    /// more, or a value outside [−1e-3, 1 + 1e-3], is refused (nil). Tiny negatives are zeroed and
    /// the rest normalised.
    public static func prior(fromMeanFractions mean: some Collection<Float>) -> [Double]? {
        let raw = mean.map(Double.init)
        guard raw.allSatisfy({ $0.isFinite && $0 >= -1e-3 && $0 <= 1 + 1e-3 }), abs(raw.reduce(0, +) - 1) <= 1e-3 else { return nil }
        let clean = raw.map { max(0, $0) }
        let total = clean.reduce(0, +)
        return clean.map { $0 / total }
    }

    /// The largest weight a prior gives, that of a class at 1 / (100 k) of the district; rarer ones
    /// are held at it, so a dishonest school in the census, or a coordinator, cannot make one class
    /// swamp every school's loss.
    public static let maxPriorWeight: Float = 100

    /// Balanced weights 1 / (k · p_c) from a prior, at most ``maxPriorWeight`` (0 for a class the
    /// district has none of; a prior below 1e-6 counts as none).
    public static func weights(prior: [Double]) -> [Float] {
        let k = Double(prior.count)
        return prior.map { $0 >= 1e-6 ? min(Float(1 / (k * $0)), maxPriorWeight) : 0 }
    }

    /// The loss weights, logit offsets and per-epoch oversampling this setting gives a school
    /// whose training examples have the class indices `classes` (each in 0..<`classCount`);
    /// `prior` is the district's (`weighted-global` only; one value per class).
    public func shaping(classes: [Int], classCount: Int, prior: [Double]? = nil) -> (weights: [Float]?, offsets: [Float]?, oversample: Bool) {
        var counts = [Int](repeating: 0, count: classCount)
        for c in classes { counts[c] += 1 }
        let n = Float(classes.count)
        let present = counts.map { $0 > 0 ? Float(0) : -.infinity }
        switch self {
        case .none: return (nil, nil, false)
        case .weighted: return (Sampling.balancedClassWeights(counts: counts), nil, false)
        case .oversampled: return (nil, nil, true)
        case .presentClasses: return (nil, present, false)
        case .weightedPresentClasses: return (Sampling.balancedClassWeights(counts: counts), present, false)
        case .weightedGlobal:
            if let prior, prior.count == classCount { return (Self.weights(prior: prior), nil, false) }
            return (Sampling.balancedClassWeights(counts: counts), nil, false)
        case .priorAdjusted: return (nil, counts.map { $0 > 0 ? logf(Float($0) / n) : -.infinity }, false)
        }
    }
}
