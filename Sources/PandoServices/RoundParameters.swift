import Crypto
import Dispatch
import Foundation
import PandoData
import PandoEngine
import PandoFederation
import PandoWire

/// The hyper-parameters of a `roundAssignment`, both ways: the coordinator writes the
/// strategy's plan into the assignment's number map, the school reads it back.
enum RoundParameters {
    static let labelSetDigest: WireToken = "labelSetDigest"
    static let labelCount: WireToken = "labelCount"
    /// `weighted-global`'s prior, one key per label index.
    static func classPriorKey(_ i: Int) -> WireToken { WireToken("classPrior.\(i)")! }

    static func encode(_ plan: LocalTrainingPlan, labels: LabelSetID) -> [WireToken: Double] {
        var p: [WireToken: Double] = [
            "localEpochs": Double(plan.epochs),
            "learningRate": Double(plan.learningRate.description) ?? Double(plan.learningRate),
            "batchSize": Double(plan.batchSize),
            "maxLength": Double(plan.maxLength),
            "warmupRatio": plan.warmupRatio,
            "linearDecay": plan.linearDecay ? 1 : 0,
            "weightDecay": Double(plan.weightDecay.description) ?? Double(plan.weightDecay),
            "dropout": plan.dropout ? 1 : 0,
            "freezeEmbeddings": plan.freezeEmbeddings ? 1 : 0,
            "seed": Double(plan.seed & 0x1F_FFFF_FFFF_FFFF),  // exact in a double
            labelSetDigest: labels.digest,
            labelCount: Double(labels.count),
        ]
        if let g = plan.maxGradientNorm { p["maxGradientNorm"] = Double(g) }
        if let mu = plan.proximalMu { p["proximalMu"] = Double(mu.description) ?? Double(mu) }
        if let dp = plan.privacy {
            p["dpNoiseMultiplier"] = dp.noiseMultiplier
            p["dpMaxGradientNorm"] = Double(dp.maxGradientNorm.description) ?? Double(dp.maxGradientNorm)
            p["dpDelta"] = dp.delta
        }
        p["compression"] = Double(plan.compression.code)
        if plan.freezeLayers > 0 { p["freezeLayers"] = Double(plan.freezeLayers) }
        if let lora = plan.lora {
            p["loraRank"] = Double(lora.rank)
            p["loraAlpha"] = Double(lora.alpha.description) ?? Double(lora.alpha)
            p["loraDropout"] = Double(lora.dropout.description) ?? Double(lora.dropout)
            p["loraTargets"] = Double(lora.targets.reduce(0) { $0 | 1 << $1.index })
        }
        p["pooling"] = Double(Pooling.allCases.firstIndex(of: plan.pooling)!)
        if case .topK(let density) = plan.compression { p["topkDensity"] = density }
        if plan.classBalance != .none { p["classBalance"] = Double(ClassBalance.allCases.firstIndex(of: plan.classBalance)!) }
        if let prior = plan.classPrior {
            for (i, v) in prior.enumerated() { p[classPriorKey(i)] = v }
        }
        return p
    }

    /// The plan in `parameters`; a missing or out-of-range value is an error naming it.
    static func decode(_ parameters: [WireToken: Double]) throws -> LocalTrainingPlan {
        func value(_ key: WireToken) throws -> Double {
            guard let v = parameters[key] else { throw RoundError("the assignment has no \(key)") }
            return v
        }
        func whole(_ key: WireToken, _ range: ClosedRange<Int>) throws -> Int {
            let v = try value(key)
            guard v.rounded() == v, v >= Double(range.lowerBound), v <= Double(range.upperBound) else {
                throw RoundError("the assignment's \(key) \(v) is not a whole number in \(range)")
            }
            return Int(v)
        }
        var plan = LocalTrainingPlan()
        plan.epochs = try whole("localEpochs", 1...1000)
        plan.batchSize = try whole("batchSize", 1...4096)
        plan.maxLength = try whole("maxLength", 3...8192)
        plan.learningRate = Float(try value("learningRate"))
        guard plan.learningRate > 0, plan.learningRate < 1 else { throw RoundError("the assignment's learningRate \(plan.learningRate) is out of range") }
        plan.warmupRatio = parameters["warmupRatio"] ?? 0
        guard plan.warmupRatio >= 0, plan.warmupRatio < 1 else { throw RoundError("the assignment's warmupRatio is out of range") }
        plan.linearDecay = (parameters["linearDecay"] ?? 0) != 0
        plan.weightDecay = Float(parameters["weightDecay"] ?? 0.01)
        plan.dropout = (parameters["dropout"] ?? 1) != 0
        // An assignment that does not say so trains the embeddings (what coordinators before this field did).
        plan.freezeEmbeddings = (parameters["freezeEmbeddings"] ?? 0) != 0
        plan.maxGradientNorm = parameters["maxGradientNorm"].map(Float.init)
        plan.proximalMu = parameters["proximalMu"].map(Float.init)
        plan.seed = UInt64(try whole("seed", 0...Int(0x1F_FFFF_FFFF_FFFF)))
        if let sigma = parameters["dpNoiseMultiplier"] {
            let clip = try value("dpMaxGradientNorm"), delta = try value("dpDelta")
            guard sigma > 0, sigma <= 1000 else { throw RoundError("the assignment's dpNoiseMultiplier \(sigma) is not in (0, 1000]") }
            guard clip > 0, clip <= 1e6 else { throw RoundError("the assignment's dpMaxGradientNorm \(clip) is not in (0, 1e6]") }
            guard delta > 0, delta < 1 else { throw RoundError("the assignment's dpDelta \(delta) is not in (0, 1)") }
            plan.privacy = RoundPrivacy(noiseMultiplier: sigma, maxGradientNorm: Float(clip), delta: delta)
        }
        if parameters["freezeLayers"] != nil { plan.freezeLayers = try whole("freezeLayers", 0...1000) }
        if parameters["loraRank"] != nil {
            let rank = try whole("loraRank", 1...4096)
            let mask = try whole("loraTargets", 1...(1 << LoRATarget.allCases.count) - 1)
            let lora = LoRAConfig(rank: rank, alpha: Float(try value("loraAlpha")), dropout: Float(parameters["loraDropout"] ?? 0),
                                  targets: LoRATarget.allCases.filter { mask & (1 << $0.index) != 0 })
            do { try lora.validate() } catch { throw RoundError("the assignment's LoRA settings: \(error)") }
            plan.lora = lora
        }
        // Pooling by its index in `Pooling.allCases`; absent: the pooler (older coordinators).
        if parameters["pooling"] != nil { plan.pooling = Pooling.allCases[try whole("pooling", 0...(Pooling.allCases.count - 1))] }
        // Class balance by its index in `ClassBalance.allCases`; absent: none.
        if parameters["classBalance"] != nil {
            plan.classBalance = ClassBalance.allCases[try whole("classBalance", 0...(ClassBalance.allCases.count - 1))]
            guard plan.classBalance == .none || plan.privacy == nil else { throw RoundError("the assignment asks for class balance \(plan.classBalance.rawValue) with DP-SGD, which does not account for it") }
        }
        if parameters[classPriorKey(0)] != nil {
            guard plan.classBalance == .weightedGlobal else { throw RoundError("the assignment sends a class prior without class balance weighted-global") }
            let count = try whole(labelCount, 1...ClassBalance.maxGlobalClasses)
            let prior = try (0..<count).map { try value(classPriorKey($0)) }
            guard parameters[classPriorKey(count)] == nil else { throw RoundError("the assignment's class prior has more values than its \(count) labels") }
            guard prior.allSatisfy({ $0 >= 0 && $0 <= 1 }), abs(prior.reduce(0, +) - 1) < 1e-6 else {
                throw RoundError("the assignment's class prior is not a distribution over its \(count) labels (each in [0, 1], sum 1)")
            }
            plan.classPrior = prior
        }
        // An assignment that does not say so wants the plain Float32 update (older coordinators).
        var code = 0
        if parameters["compression"] != nil { code = try whole("compression", 0...3) }
        switch code {
        case 1: plan.compression = .float16
        case 2: plan.compression = .int8
        case 3:
            let density = try value("topkDensity")
            guard UpdateCompression.validDensity(density) else { throw RoundError("the assignment's topkDensity \(density) is not in (0, 1]") }
            plan.compression = .topK(density: density)
        default: plan.compression = .none
        }
        return plan
    }
}

/// A federation's label set as a number both ends can compare: the first 48 bits of the
/// SHA-256 of the task and the label names in order (exact in a double).
struct LabelSetID: Sendable, Equatable {
    let digest: Double
    let count: Int

    init(task: TaskKind, labels: [String]) {
        let text = ([task.rawValue] + labels).joined(separator: "\n")
        let hash = Array(SHA256.hash(data: Data(text.utf8)))
        var x: UInt64 = 0
        for b in hash.prefix(6) { x = x << 8 | UInt64(b) }
        digest = Double(x)
        count = labels.count
    }
}

/// A round-level problem (a bad assignment, a mismatched label set); its text is Pando's own.
public struct RoundError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs CPU-heavy work (training, evaluation, aggregation, checkpoint writes) on one
/// serial thread outside Swift's cooperative pool, so heartbeats and transfers keep
/// flowing while it runs, and so several in-process schools (a simulation) take turns
/// on the cores instead of oversubscribing them.
public enum ComputeLane {
    static let queue = DispatchQueue(label: "pando.compute", qos: .userInitiated)

    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}

/// Hands a value that is used by one task at a time (the compute lane) across a
/// `@Sendable` boundary.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
