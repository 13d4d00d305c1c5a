import Foundation
import PandoData
import PandoEngine

/// Every hyper-parameter of a local fine-tuning run. Defaults follow the
/// Hugging Face Trainer protocol Pando is measured against: AdamW (decay 0.01,
/// none on biases and LayerNorm), linear warm-up over 10% then linear decay,
/// gradient clipping at 1.0, batch 32, max length 128, 3 epochs.
public struct TrainingOptions: Codable, Sendable, Equatable {
    /// How the loss weights classes.
    public enum ClassWeighting: String, Codable, Sendable, CaseIterable {
        /// Classification: "balanced" weights from the training frequencies, n / (k · count).
        /// Multi-label: each label's positive weight (`BCEWithLogitsLoss(pos_weight:)`),
        /// negatives / positives in the training data, uncapped.
        case auto
        case none
    }

    public var epochs = 3
    public var learningRate: Float = 5e-5
    /// Peak learning rate of the classifier (the head's last linear layer, the only newly
    /// initialised weights), on the same warm-up and decay; nil is `learningRate`.
    public var headLearningRate: Float? = nil
    public var batchSize = 32
    /// Longest sequence in tokens, special tokens included (clamped to the model's positions).
    public var maxLength = 128
    /// Fraction of all updates spent warming the learning rate up from 0.
    public var warmupRatio: Double = 0.1
    public var weightDecay: Float = 0.01
    /// AdamW's ε (Hugging Face's `adam_epsilon`); nil is 1e-8. Optional so
    /// that records written before it existed still load.
    public var adamEpsilon: Float? = nil
    public var maxGradientNorm: Float = 1.0
    /// Seeds the head's initialisation, the split, shuffling, oversampling and dropout.
    public var seed: UInt64 = 42
    public var classWeights: ClassWeighting = .none
    /// Random oversampling of smaller classes up to the largest, redrawn each epoch.
    public var oversample = false
    /// Metric chosen on validation for the best checkpoint and early stopping;
    /// nil means the task's default (`EvaluationMetrics.defaultMetric`).
    public var earlyStoppingMetric: String?
    /// Epochs without improvement before stopping; nil trains every epoch.
    public var patience: Int? = 2
    public var freezeEmbeddings = false
    /// Freeze encoder layers 0..<freezeLayers.
    public var freezeLayers = 0
    public var pooling: Pooling = .pooler
    /// Dropout as configured by the model (false: deterministic training).
    public var dropout = true
    /// Multi-label: choose each label's threshold on validation to maximise its F1.
    public var tuneThresholds = false
    /// Regression: the integer score range for QWK; nil infers it from
    /// integer-valued training scores.
    public var scoreRange: [Int]?
    /// Batches per length-grouping chunk: examples are shuffled, cut into chunks
    /// of this many batches, sorted by length inside each chunk, and the batches
    /// shuffled again. 0 (the default) is plain shuffled batches: with packed batches
    /// grouping gains no speed (measured: 1,924 vs 1,986 tokens/s on vader+trec), and where
    /// a text's length predicts its label it makes batches nearly single-class
    /// (math_modules: test accuracy 0.896 grouped, 0.944 not).
    public var lengthGroupingBatches = 0
    public var evaluationBatchSize = 64
    /// Example-level differential privacy (DP-SGD); nil trains without it.
    public var privacy: PrivacyOptions?
    /// LoRA adapters instead of full fine-tuning; nil trains every weight.
    public var lora: LoRAConfig?

    public init() {}

    public func validate() throws {
        func bad(_ s: String) -> TrainingError { TrainingError(s) }
        guard epochs >= 1 else { throw bad("--epochs must be at least 1") }
        guard batchSize >= 1 else { throw bad("--batch-size must be at least 1") }
        guard maxLength >= 3 else { throw bad("--max-length must be at least 3 (two special tokens and one word piece)") }
        guard learningRate > 0, learningRate.isFinite else { throw bad("--learning-rate must be positive") }
        if let h = headLearningRate, !(h > 0 && h.isFinite) { throw bad("--head-learning-rate must be positive") }
        guard (0...1).contains(warmupRatio) else { throw bad("--warmup-ratio must be in 0...1") }
        guard weightDecay >= 0 else { throw bad("--weight-decay must not be negative") }
        guard (adamEpsilon ?? 1e-8) > 0 else { throw bad("--adam-epsilon must be positive") }
        guard freezeLayers >= 0 else { throw bad("--freeze-layers must not be negative") }
        if let patience, patience < 1 { throw bad("--patience must be at least 1") }
        if let r = scoreRange, r.count != 2 || r[0] >= r[1] { throw bad("score range must be two increasing integers") }
        if let lora {
            do { try lora.validate() } catch { throw bad("\(error)") }
            if freezeLayers > 0 { throw bad("--freeze-layers cannot be combined with --lora-rank: LoRA already freezes every base weight") }
        }
        if let privacy {
            try privacy.validate()
            if oversample { throw bad("--oversample repeats examples, so one student's text could count several times in a step; it cannot be combined with differential privacy") }
        }
    }
}

/// DP-SGD settings of a local training run: either a target ε (the noise multiplier is
/// calibrated to it) or a noise multiplier (ε is then what the accountant reports).
public struct PrivacyOptions: Codable, Sendable, Equatable {
    public var targetEpsilon: Double?
    public var noiseMultiplier: Double?
    public var delta: Double = 1e-5
    /// C: each example's gradient is clipped to this L2 norm.
    public var maxGradientNorm: Float = 1.0

    public init(targetEpsilon: Double? = nil, noiseMultiplier: Double? = nil, delta: Double = 1e-5, maxGradientNorm: Float = 1.0) {
        self.targetEpsilon = targetEpsilon
        self.noiseMultiplier = noiseMultiplier
        self.delta = delta
        self.maxGradientNorm = maxGradientNorm
    }

    public func validate() throws {
        func bad(_ s: String) -> TrainingError { TrainingError(s) }
        guard (targetEpsilon == nil) != (noiseMultiplier == nil) else { throw bad("differential privacy needs exactly one of --dp-epsilon and --dp-noise-multiplier") }
        if let e = targetEpsilon, !(e > 0 && e.isFinite) { throw bad("--dp-epsilon must be a positive number") }
        if let s = noiseMultiplier, !(s > 0 && s.isFinite) { throw bad("--dp-noise-multiplier must be a positive number") }
        guard delta > 0, delta < 1 else { throw bad("--dp-delta must be in (0, 1)") }
        guard maxGradientNorm > 0, maxGradientNorm.isFinite else { throw bad("--dp-max-grad-norm must be a positive number") }
    }
}

/// What differential privacy a run or a round had, as recorded next to its weights and in
/// the audit: enough for anyone to recompute ε with an RDP accountant.
public struct PrivacyRecord: Codable, Sendable, Equatable {
    public var mechanism = "dp-sgd, Poisson-sampled Gaussian, example level"
    public var accountant = "rdp"
    public var samplingRate: Double
    public var noiseMultiplier: Double
    public var steps: Int
    public var maxGradientNorm: Double
    public var delta: Double
    public var epsilon: Double

    public init(samplingRate: Double, noiseMultiplier: Double, steps: Int, maxGradientNorm: Double, delta: Double) throws {
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.steps = steps
        self.maxGradientNorm = maxGradientNorm
        self.delta = delta
        var accountant = RDPAccountant()
        try accountant.compose(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps)
        epsilon = accountant.epsilon(delta: delta).epsilon
    }
}

/// A problem with a training, evaluation or prediction request, worded for the user.
public struct TrainingError: Error, CustomStringConvertible, LocalizedError {
    public let description: String
    public init(_ description: String) { self.description = description }
    public var errorDescription: String? { description }
}

/// What one epoch did.
public struct EpochRecord: Codable, Sendable {
    public var epoch: Int
    public var steps: Int
    public var trainLoss: Double
    public var learningRate: Double
    public var seconds: Double
    public var tokensPerSecond: Double
    public var validation: EvaluationMetrics
    public var improved: Bool
}

/// `pando-training.json`: everything needed to use and audit a checkpoint
/// Pando trained — task, label map, settings and per-epoch metrics. Never text.
public struct TrainingRecord: Codable, Sendable {
    public static let fileName = "pando-training.json"

    public var format = 1
    public var task: TaskKind
    /// Output order of the head; the label map.
    public var labels: [String]
    public var pooling: Pooling
    public var maxLength: Int
    /// Multi-label decision thresholds, one per label.
    public var thresholds: [Float]?
    public var scoreRange: [Int]?
    public var options: TrainingOptions
    public var baseModel: String
    public var data: [PandoData.LoadReport]
    /// The loss weights `--class-weights auto` chose: one per class (classification) or
    /// each label's positive weight (multi-label).
    public var classWeights: [Float]?
    public var earlyStoppingMetric: String
    public var epochs: [EpochRecord] = []
    public var bestEpoch: Int?
    public var stoppedEarly = false
    /// Test metrics of the best validation epoch's weights.
    public var test: EvaluationMetrics?
    /// Differential privacy of the training run, when it had any.
    public var privacy: PrivacyRecord?
    /// For a federated version: the federation it belongs to (then `data` and `epochs` are
    /// empty: the training happened at the schools).
    public var federation: String?

    /// The record the coordinator writes into every global version: what `pando predict` and
    /// `pando evaluate` need to use it as the federation does (task, labels, pooling, the
    /// plan's max length, multi-label thresholds).
    public static func federatedVersion(federation: String, task: TaskKind, labels: [String], pooling: Pooling, maxLength: Int,
                                        baseModel: String) -> TrainingRecord {
        var options = TrainingOptions()
        options.maxLength = maxLength
        // Multi-label thresholds are written out (0.5 each: a federation tunes none), so an exported
        // version says what it decides with instead of leaving it to a reader's default.
        return TrainingRecord(task: task, labels: labels, pooling: pooling, maxLength: maxLength,
                              thresholds: task == .multiLabel ? [Float](repeating: 0.5, count: labels.count) : nil,
                              options: options, baseModel: baseModel,
                              data: [], earlyStoppingMetric: EvaluationMetrics.defaultMetric(for: task), federation: federation)
    }

    public static func read(from folder: URL) throws -> TrainingRecord? {
        let url = folder.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            return try JSONDecoder().decode(TrainingRecord.self, from: Data(contentsOf: url))
        } catch {
            throw TrainingError("\(url.path): cannot read (\(error))")
        }
    }
}

extension TaskKind {
    /// The engine objective for this task.
    public var objective: Objective {
        switch self {
        case .classification: .softmaxCrossEntropy
        case .multiLabel: .sigmoidBinaryCrossEntropy
        case .regression: .meanSquaredError
        case .ordinal: .ordinal
        }
    }

    public init(objective: Objective) {
        switch objective {
        case .softmaxCrossEntropy: self = .classification
        case .sigmoidBinaryCrossEntropy: self = .multiLabel
        case .meanSquaredError: self = .regression
        case .ordinal: self = .ordinal
        }
    }
}

/// Pretty, key-sorted JSON for files and `--json` output.
func prettyJSON<T: Encodable>(_ value: T) throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return try encoder.encode(value)
}
