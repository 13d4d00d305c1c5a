import Foundation
import PandoData
import PandoEngine
import PandoText

/// Local fine-tuning, as the Hugging Face Trainer does it, on Pando's engine:
/// tokenise once, length-grouped seeded batches, AdamW with linear warm-up
/// and decay, clipping, class weights or oversampling, evaluation every epoch,
/// best checkpoint kept on disk, early stopping.
public final class Trainer {
    public let options: TrainingOptions
    public let task: TaskKind
    public let labels: LabelMap
    public let baseModel: URL
    public let progress: ProgressReporter
    public let model: BertModel
    public let tokenizer: BertTokenizer
    public let maxLength: Int
    /// What loading the base checkpoint initialised or ignored.
    public let loadReport: PandoEngine.LoadReport

    /// - Parameters:
    ///   - baseModel: a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).
    ///   - labels: the label map (ignored for regression).
    public init(baseModel: URL, task: TaskKind, labels: LabelMap, options: TrainingOptions, progress: ProgressReporter = .silent) throws {
        try options.validate()
        self.options = options
        self.task = task
        self.labels = labels
        self.baseModel = baseModel
        self.progress = progress
        if task != .regression, labels.count < task.minimumLabels {
            throw TrainingError("\(task.rawValue) needs at least \(task.minimumLabels) labels; found \(labels.count)")
        }
        let head = ClassifierHead(objective: task.objective, labels: task == .regression ? ["score"] : labels.names, pooling: options.pooling)
        let (base, loadReport) = try BertModel.load(from: baseModel, head: head, seed: options.seed)
        self.loadReport = loadReport
        guard !base.inferenceOnly else {
            throw TrainingError("\(baseModel.path) is an int8 checkpoint (pando quantize), for inference only: train from the float32 folder it was made from")
        }
        if let lora = options.lora {
            do { model = try BertModel(lora: lora, base: base, seed: options.seed) } catch { throw TrainingError("\(error)") }
        } else {
            model = base
        }
        tokenizer = try BertTokenizer(folder: baseModel)
        guard tokenizer.vocabularySize <= model.config.vocabSize else {
            throw TrainingError("\(baseModel.path): vocab.txt has \(tokenizer.vocabularySize) tokens but config.json's vocab_size is \(model.config.vocabSize)")
        }
        maxLength = min(options.maxLength, model.config.maxPositions)
        if options.classWeights == .auto, task == .regression || task == .ordinal {
            throw TrainingError("--class-weights auto is for classification (per-class weights) and multi-label (per-label positive weights), not \(task.rawValue)")
        }
        if options.tuneThresholds, task != .multiLabel {
            throw TrainingError("--tune-thresholds is for multi-label tasks, not \(task.rawValue)")
        }
        if options.freezeLayers > model.config.layers {
            throw TrainingError("--freeze-layers \(options.freezeLayers) exceeds the model's \(model.config.layers) layers")
        }
    }

    /// The tensor names frozen by the options.
    public var frozenTensors: Set<String> {
        var prefixes: [String] = []
        let family = model.config.family
        if options.freezeEmbeddings { prefixes.append(family.embeddingsPrefix) }
        for l in 0..<options.freezeLayers { prefixes.append(family.layerPrefix(l)) }
        var frozen = Set(model.layout.tensors.map(\.name).filter { name in prefixes.contains { name.hasPrefix($0) } })
        // A head that does not pool through the pooler never reads it: without this, weight
        // decay (and under DP-SGD, noise) would move weights nothing trains.
        if options.pooling != .pooler { frozen.formUnion(model.poolerTensorNames) }
        // LoRA: every base tensor but the head.
        if model.lora != nil { frozen.formUnion(model.loraFrozenTensors) }
        return frozen
    }

    /// The classifier's weight and bias, which `headLearningRate` applies to.
    public var classifierTensorNames: [String] {
        let prefix = model.config.family.classifierPrefix
        return model.layout.tensors.map(\.name).filter { $0.hasPrefix(prefix) }
    }

    func encode(_ data: LabeledDataset) -> [[Int32]] {
        EncodedDataset(data, tokenizer: tokenizer, maxLength: maxLength).sequences
    }

    /// One epoch's batches: positions into the training examples. Shuffled,
    /// grouped by length within chunks of `lengthGroupingBatches` batches, then
    /// the batches shuffled; all from `rng`.
    public static func batchPlan(indices: [Int], lengths: [Int], batchSize: Int, groupingBatches: Int,
                                 using rng: inout SplitMix64) -> [[Int]] {
        var order = indices
        seededShuffle(&order, using: &rng)
        guard groupingBatches > 0 else {
            return stride(from: 0, to: order.count, by: batchSize).map { Array(order[$0..<min($0 + batchSize, order.count)]) }
        }
        let chunk = batchSize * groupingBatches
        var batches: [[Int]] = []
        for start in stride(from: 0, to: order.count, by: chunk) {
            let part = order[start..<min(start + chunk, order.count)].enumerated()
                .sorted { (lengths[$0.element], $0.offset) > (lengths[$1.element], $1.offset) }
                .map(\.element)
            for b in stride(from: 0, to: part.count, by: batchSize) {
                batches.append(Array(part[b..<min(b + batchSize, part.count)]))
            }
        }
        seededShuffle(&batches, using: &rng)
        return batches
    }

    /// Trains on `train`, selects on `validation`, writes the best checkpoint
    /// to `output` and, with `test`, reports test metrics of the best weights.
    @discardableResult
    public func run(train: LabeledDataset, validation: LabeledDataset, test: LabeledDataset? = nil, output: URL) throws -> TrainingRecord {
        for (name, d) in [("training", train), ("validation", validation)] + (test.map { [("test", $0)] } ?? []) {
            guard d.task == task else { throw TrainingError("\(name) data is \(d.task.rawValue), expected \(task.rawValue)") }
            guard d.count > 0 else { throw TrainingError("\(name) data is empty") }
            if task != .regression, d.labels != labels { throw TrainingError("\(name) data has a different label map") }
        }
        let metric = options.earlyStoppingMetric ?? EvaluationMetrics.defaultMetric(for: task)
        guard EvaluationMetrics.names(for: task).contains(metric) else {
            throw TrainingError("--early-stopping-metric \(metric) is not a \(task.rawValue) metric (choose from \(EvaluationMetrics.names(for: task).joined(separator: ", ")))")
        }
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)

        let trainData = EncodedDataset(train, tokenizer: tokenizer, maxLength: maxLength)
        let validationSequences = encode(validation)
        let testSequences = test.map(encode)
        let lengths = trainData.sequences.map(\.count)
        let strata = options.oversample ? train.strata() : []
        let scoreRange = options.scoreRange ?? (task == .regression ? Evaluation.inferScoreRange(train.examples.map { $0.target.score! }) : nil)

        var classWeights: [Float]?
        if options.classWeights == .auto {
            switch task {
            case .classification: classWeights = train.classWeights()
            case .multiLabel:
                let w = train.positiveWeights()
                classWeights = w
                progress.log(String(format: "positive weights (negatives / positives per label): %.3g to %.3g, mean %.3g",
                                    w.min()!, w.max()!, w.reduce(0, +) / Float(w.count)))
            case .regression, .ordinal: break  // refused by init
            }
        }

        // Updates per epoch are fixed: oversampling always yields the same count.
        let epochSize = options.oversample
            ? Sampling.oversampledCount(strata: strata) : train.count
        let stepsPerEpoch = (epochSize + options.batchSize - 1) / options.batchSize
        let totalSteps = stepsPerEpoch * options.epochs
        let warmup = Int((Double(totalSteps) * options.warmupRatio).rounded(.up))

        var settings = FineTuner.Settings()
        settings.learningRate = options.learningRate
        settings.schedule = .linear(warmupSteps: warmup, totalSteps: totalSteps)
        settings.maxGradientNorm = options.maxGradientNorm
        settings.adam = AdamW.Settings(epsilon: options.adamEpsilon ?? 1e-8, weightDecay: options.weightDecay)
        settings.seed = options.seed
        settings.dropout = options.dropout
        // DP-SGD: Poisson batches of expected size batchSize, in physical chunks of at most 64.
        var privateSteps: (settings: DPSGDSettings, rate: Double, randomness: DPRandomness)?
        if let dp = options.privacy {
            let rate = min(1, Double(options.batchSize) / Double(train.count))
            let sigma = try dp.noiseMultiplier ?? RDPAccountant.calibrateNoiseMultiplier(
                targetEpsilon: dp.targetEpsilon!, delta: dp.delta, samplingRate: rate, steps: totalSteps)
            privateSteps = (DPSGDSettings(maxGradientNorm: dp.maxGradientNorm, noiseMultiplier: Float(sigma),
                                          expectedBatchSize: rate * Double(train.count)), rate, privacyRandomness())
        }
        let batchCap = privateSteps == nil ? min(options.batchSize, epochSize) : min(options.batchSize, 64)
        let tuner = FineTuner(model: model, capacity: BatchCapacity(sequences: batchCap, length: maxLength), settings: settings)
        tuner.frozen = frozenTensors
        if let head = options.headLearningRate {
            let scale = head / options.learningRate
            tuner.optimizer.learningRateScale = Dictionary(uniqueKeysWithValues: classifierTensorNames.map { ($0, scale) })
            progress.log("classifier learning rate \(head) (\(classifierTensorNames.joined(separator: ", "))), encoder \(options.learningRate)")
        }
        let evaluator = BatchedInference(model: model, batchSize: options.evaluationBatchSize, maxLength: maxLength)

        var record = TrainingRecord(
            task: task, labels: task == .regression ? ["score"] : labels.names, pooling: options.pooling, maxLength: maxLength,
            thresholds: nil, scoreRange: scoreRange, options: options, baseModel: baseModel.path,
            data: [train.report, validation.report] + (test.map { [$0.report] } ?? []),
            classWeights: classWeights, earlyStoppingMetric: metric)
        progress.log("training \(task.rawValue) on \(train.count) examples (\(stepsPerEpoch) batches of \(options.batchSize) per epoch, \(options.epochs) epochs, warm-up \(warmup) of \(totalSteps) updates), validating on \(validation.count)")
        if !loadReport.initialized.isEmpty { progress.log("initialised: \(loadReport.initialized.joined(separator: ", "))") }
        if !tuner.frozen.isEmpty { progress.log("frozen: \(tuner.frozen.count) tensors") }
        if let lora = model.lora {
            let trained = model.layout.tensors.filter { !tuner.frozen.contains($0.name) }.reduce(0) { $0 + $1.count }
            progress.log("LoRA: rank \(lora.rank), α \(lora.alpha), dropout \(lora.dropout) on \(lora.targets.map(\.rawValue).joined(separator: ", ")); \(trained) of \(model.parameterCount) parameters trained")
        }
        if let (dp, rate, _) = privateSteps {
            let planned = try PrivacyRecord(samplingRate: rate, noiseMultiplier: Double(dp.noiseMultiplier), steps: totalSteps,
                                            maxGradientNorm: Double(dp.maxGradientNorm), delta: options.privacy!.delta)
            progress.log(String(format: "differential privacy: DP-SGD, sampling rate %.4g (expected batch %.1f), noise multiplier %.4g, clip %.3g, %d steps: ε = %.3g at δ = %.3g (RDP)",
                                rate, dp.expectedBatchSize, dp.noiseMultiplier, dp.maxGradientNorm, totalSteps, planned.epsilon, planned.delta))
            if planned.delta >= 1 / Double(train.count) {
                progress.log("note: δ = \(planned.delta) is not below 1/n = \(1 / Double(train.count)); a δ that large can allow releasing one example outright")
            }
        }

        var best: ParameterBuffer?
        var bestValue: Double?
        var bestThresholds: [Float]?
        var sinceImprovement = 0

        for epoch in 1...options.epochs {
            var epochRNG = SplitMix64(seed: options.seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15)
            let indices = options.oversample
                ? Sampling.oversampledIndices(strata: strata, using: &epochRNG) : Array(train.examples.indices)
            let plan = Self.batchPlan(indices: indices, lengths: lengths, batchSize: options.batchSize,
                                      groupingBatches: options.lengthGroupingBatches, using: &epochRNG)
            let start = Date()
            let report = { [progress, options] (stats: EpochStatistics) in
                let elapsed = max(Date().timeIntervalSince(start), 1e-9)
                progress.step(epoch: epoch, epochs: options.epochs, step: stats.steps, steps: plan.count,
                              loss: stats.meanLoss, tokensPerSecond: Double(stats.tokens) / elapsed,
                              learningRate: stats.lastLearningRate)
            }
            let stats = if let (dp, rate, randomness) = privateSteps {
                try tuner.runPrivateSteps(stepsPerEpoch, data: trainData, samplingRate: rate, privacy: dp, randomness: randomness,
                                          classWeights: classWeights, onStep: report)
            } else {
                try tuner.runEpoch(plan, data: trainData, classWeights: classWeights, onStep: report)
            }
            if let (dp, rate, _) = privateSteps {
                // ε of the steps taken so far: what the saved weights have spent.
                record.privacy = try PrivacyRecord(samplingRate: rate, noiseMultiplier: Double(dp.noiseMultiplier), steps: tuner.step,
                                                   maxGradientNorm: Double(dp.maxGradientNorm), delta: options.privacy!.delta)
            }
            let lossSum = stats.lossSum, tokens = stats.tokens, lastRate = stats.lastLearningRate
            let seconds = Date().timeIntervalSince(start)

            let validationLogits = evaluator.logits(validationSequences)
            var thresholds: [Float]?
            if task == .multiLabel, options.tuneThresholds {
                thresholds = Evaluation.tuneThresholds(logits: validationLogits, targets: validation.examples.map(\.target), labelCount: labels.count)
            }
            let metrics = try Evaluation.metrics(logits: validationLogits, targets: validation.examples.map(\.target), task: task,
                                                 labels: record.labels, thresholds: thresholds, scoreRange: scoreRange)
            let value = metrics.value(metric)
            let improved = best == nil || EvaluationMetrics.better(value, than: bestValue, metric: metric)
            record.epochs.append(EpochRecord(epoch: epoch, steps: plan.count, trainLoss: lossSum / Double(max(plan.count, 1)),
                                             learningRate: Double(lastRate), seconds: seconds,
                                             tokensPerSecond: Double(tokens) / max(seconds, 1e-9), validation: metrics, improved: improved))
            let shown = value.map { String(format: "%.4f", $0) } ?? "undefined"
            progress.log(String(format: "epoch %d/%d: train loss %.4f, validation loss %.4f, %@ %@%@ (%.0f s)",
                                epoch, options.epochs, lossSum / Double(max(plan.count, 1)), metrics.loss, metric, shown,
                                improved ? " (best, saved)" : "", seconds))
            if improved {
                bestValue = value
                bestThresholds = thresholds
                if let best { best.buffer.copy(from: model.parameters.buffer) } else { best = model.parameters.copy() }
                record.bestEpoch = epoch
                record.thresholds = task == .multiLabel ? (thresholds ?? [Float](repeating: 0.5, count: labels.count)) : nil
                try saveCheckpoint(record, to: output)
                sinceImprovement = 0
            } else {
                sinceImprovement += 1
                try writeRecord(record, to: output)
                if let patience = options.patience, sinceImprovement >= patience, epoch < options.epochs {
                    record.stoppedEarly = true
                    progress.log("early stopping: no \(metric) improvement in \(patience) epoch\(patience == 1 ? "" : "s")")
                    break
                }
            }
        }

        if let best { model.parameters.buffer.copy(from: best.buffer) }
        if let test, let testSequences {
            let logits = evaluator.logits(testSequences)
            record.test = try Evaluation.metrics(logits: logits, targets: test.examples.map(\.target), task: task, labels: record.labels,
                                                 thresholds: task == .multiLabel ? bestThresholds : nil, scoreRange: scoreRange)
            let summary = record.test!.summary.filter { $0.key != "loss" }.sorted { $0.key < $1.key }
                .map { String(format: "%@ %.4f", $0.key, $0.value) }.joined(separator: ", ")
            progress.log("test (best epoch \(record.bestEpoch ?? 0)): \(summary)")
        }
        try writeRecord(record, to: output)
        return record
    }

    /// The DP-SGD randomness: cryptographic unless `PANDO_DP_TEST_SEED` names a seed, which
    /// only the test suite sets (to reproduce a run; such a run protects nothing).
    func privacyRandomness() -> DPRandomness {
        if let seed = ProcessInfo.processInfo.environment["PANDO_DP_TEST_SEED"].flatMap(UInt64.init) {
            progress.log("warning: PANDO_DP_TEST_SEED is set: DP-SGD's sampling and noise are reproducible, so this run has no privacy")
            return SeededRandomness(seed: seed)
        }
        return SecureRandomness()
    }

    /// The subfolder of a LoRA run's output that holds the PEFT adapter.
    public static let adapterFolder = "adapter"

    /// Writes the weights, config, tokenizer files and the record; each file atomically.
    /// The record is written last, so it never names an epoch whose weights are not on disk.
    func saveCheckpoint(_ record: TrainingRecord, to output: URL) throws {
        let files = BertTokenizer.folderFiles.map { baseModel.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
        let metadata = ["pando_epoch": "\(record.bestEpoch ?? 0)", "pando_task": task.rawValue]
        if model.lora != nil {
            // The merged plain model, which pando predict/evaluate and transformers load, and the
            // adapter in PEFT's format in `adapter/` (not beside it: transformers would see
            // adapter_config.json and load the base model plus the adapter instead).
            try model.mergedLoRA().save(to: output, copying: files, metadata: metadata)
            try model.savePEFTAdapter(to: output.appendingPathComponent(Self.adapterFolder),
                                      baseModel: baseModel.standardizedFileURL.resolvingSymlinksInPath().path)
        } else {
            try model.save(to: output, copying: files, metadata: metadata)
        }
        try writeRecord(record, to: output)
    }

    /// `pando-training.json` and `metrics.json` (per-epoch and test metrics).
    func writeRecord(_ record: TrainingRecord, to output: URL) throws {
        try AtomicFile.write(try prettyJSON(record), to: output.appendingPathComponent(TrainingRecord.fileName))
        struct Metrics: Encodable {
            var task: TaskKind
            var earlyStoppingMetric: String
            var bestEpoch: Int?
            var stoppedEarly: Bool
            var epochs: [EpochRecord]
            var best: EvaluationMetrics?
            var test: EvaluationMetrics?
        }
        let best = record.bestEpoch.flatMap { b in record.epochs.first { $0.epoch == b }?.validation }
        try AtomicFile.write(try prettyJSON(Metrics(task: task, earlyStoppingMetric: record.earlyStoppingMetric, bestEpoch: record.bestEpoch,
                                                    stoppedEarly: record.stoppedEarly, epochs: record.epochs, best: best, test: record.test)),
                             to: output.appendingPathComponent("metrics.json"))
    }
}
