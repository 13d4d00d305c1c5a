import Foundation
import PandoData
import PandoEngine
import PandoText
import PandoTraining

/// A school's side of a round: start from the global weights, train locally
/// with the shared engine (`FineTuner`, `Trainer.batchPlan`), and return the
/// delta trained − global. It owns the one extra model copy a school needs;
/// the returned update's delta *is* that copy's buffer, valid until the next
/// `train` call. Optimiser state (gradients, AdamW moments) is allocated per
/// call and released at its end: a fresh AdamW each round, as federated
/// fine-tuning usually does.
///
/// The epoch loop is `FineTuner.runEpoch`, the one `Trainer` uses; the
/// validation and checkpoint parts of `Trainer.run` have no place in a round.
public final class LocalUpdater {
    public let model: BertModel
    /// Batches per length-grouping chunk, as `TrainingOptions.lengthGroupingBatches`.
    public var lengthGroupingBatches = TrainingOptions().lengthGroupingBatches

    /// Allocates the local copy, shaped like `global` (its values are set by each `train`).
    public init(like global: BertModel) throws {
        let plain = BertModel(config: global.config, head: global.head, seed: 0)
        // A round model with adapters (federated LoRA) gets a copy with the same adapters.
        model = try global.lora.map { try BertModel(lora: $0, base: plain, seed: 0) } ?? plain
    }

    /// DP-SGD's sampling rate and step count for a school of `examples` under `plan`: Poisson
    /// batches of expected size `batchSize`, as many steps per epoch as plain batches would take.
    public static func privateSchedule(_ plan: LocalTrainingPlan, examples: Int) -> (samplingRate: Double, steps: Int) {
        let perEpoch = (examples + plan.batchSize - 1) / plan.batchSize
        return (min(1, Double(plan.batchSize) / Double(max(examples, 1))), perEpoch * plan.epochs)
    }

    /// Trains `data` from `global`'s weights with `plan` and returns the update.
    /// `progress` sees the fraction of the round's updates done after each one.
    /// With `plan.privacy` the round runs DP-SGD (clip `clip`, else the plan's) with
    /// `randomness` (cryptographic unless a test passes a seeded one), and the update's
    /// metrics say what it spent: `dp_sampling_rate`, `dp_noise_multiplier`, `dp_steps`,
    /// `dp_max_gradient_norm`.
    public func train(school: String, data: EncodedDataset, from global: BertModel, round: Int, baseVersion: String,
                      plan: LocalTrainingPlan, clip: Float? = nil, randomness: DPRandomness? = nil,
                      progress: ((Double) -> Void)? = nil) throws -> ModelUpdate {
        precondition(global.layout == model.layout, "global model differs from the local copy's layout")
        guard data.count > 0 else { throw TrainingError("school \(school) has no training examples") }
        let start = Date()
        model.parameters.buffer.copy(from: global.parameters.buffer)

        if plan.classBalance != .none {
            guard data.task == .classification else { throw TrainingError("class balance \(plan.classBalance.rawValue) applies to classification, not \(data.task.rawValue)") }
            guard plan.privacy == nil else { throw TrainingError("class balance \(plan.classBalance.rawValue) cannot be combined with DP-SGD: its weights come from the school's own label counts, which the accountant does not cover") }
        }
        let classes = data.task == .classification ? data.targets.map { $0.classIndex! } : []
        if let prior = plan.classPrior, plan.classBalance == .weightedGlobal, prior.count != data.labelCount {
            throw TrainingError("the plan's class prior has \(prior.count) values for \(data.labelCount) labels")
        }
        let shaping = plan.classBalance.shaping(classes: classes, classCount: data.labelCount, prior: plan.classPrior)
        // Oversampling always yields the same count, so every epoch has the same updates.
        let epochExamples = shaping.oversample ? Sampling.oversampledCount(strata: classes) : data.count
        let stepsPerEpoch = (epochExamples + plan.batchSize - 1) / plan.batchSize
        let total = stepsPerEpoch * plan.epochs
        let warmup = Int((Double(total) * plan.warmupRatio).rounded(.up))
        var settings = FineTuner.Settings()
        settings.learningRate = plan.learningRate
        if plan.linearDecay {
            settings.schedule = .linear(warmupSteps: warmup, totalSteps: total)
        } else if warmup > 0 {
            settings.schedule = .linear(warmupSteps: warmup, totalSteps: Int(Int32.max))
        }
        settings.maxGradientNorm = plan.maxGradientNorm
        settings.adam = AdamW.Settings(weightDecay: plan.weightDecay)
        let seed = (plan.seed ^ Self.stableHash(school)) &+ UInt64(round) &* 0x9E37_79B9_7F4A_7C15
        settings.seed = seed
        settings.dropout = plan.dropout
        // The data was truncated when it was encoded; size the workspace for it.
        let lengths = data.sequences.map(\.count)
        let longest = min(lengths.max() ?? 1, model.config.maxPositions)
        let schedule = Self.privateSchedule(plan, examples: data.count)
        let privacy = plan.privacy.map { dp in
            DPSGDSettings(maxGradientNorm: clip ?? dp.maxGradientNorm, noiseMultiplier: Float(dp.noiseMultiplier),
                          expectedBatchSize: schedule.samplingRate * Double(data.count))
        }
        let physical = privacy == nil ? min(plan.batchSize, data.count) : min(plan.batchSize, 64, data.count)
        let tuner = FineTuner(model: model, capacity: BatchCapacity(sequences: physical, length: longest), settings: settings)
        if let mu = plan.proximalMu, mu > 0 { tuner.proximal = (global.parameters, mu) }
        // Frozen tensors get no step at all (not even weight decay): their delta is exactly zero.
        tuner.frozen = TensorSelection(layout: model.layout, plan: plan).frozen
        tuner.logitOffsets = shaping.offsets

        var lossSum = 0.0, steps = 0, tokens = 0, lastEpochLoss = 0.0
        for epoch in 1...plan.epochs {
            var rng = SplitMix64(seed: seed &+ UInt64(epoch) &* 0xD1B5_4A32_D192_ED03)
            let indices = shaping.oversample ? Sampling.oversampledIndices(strata: classes, using: &rng) : Array(0..<data.count)
            let batches = Trainer.batchPlan(indices: indices, lengths: lengths, batchSize: plan.batchSize,
                                            groupingBatches: lengthGroupingBatches, using: &rng)
            let stats: EpochStatistics
            let done = steps
            let report = { (s: EpochStatistics) -> Void in progress?(Double(done + s.steps) / Double(max(total, 1))) }
            do {
                if let privacy {
                    stats = try tuner.runPrivateSteps(schedule.steps / plan.epochs, data: data, samplingRate: schedule.samplingRate,
                                                      privacy: privacy, randomness: randomness ?? SecureRandomness(), onStep: report)
                } else {
                    stats = try tuner.runEpoch(batches, data: data, classWeights: shaping.weights, onStep: report)
                }
            } catch {
                throw TrainingError("school \(school), round \(round): \(error)")
            }
            lossSum += stats.lossSum
            steps += stats.steps
            tokens += stats.tokens
            lastEpochLoss = stats.meanLoss
        }
        DeltaMath.subtract(global.parameters.buffer, from: model.parameters.buffer)
        let seconds = Date().timeIntervalSince(start)
        var metrics = ["train_loss": lossSum / Double(max(steps, 1)), "last_epoch_loss": lastEpochLoss,
                       "steps": Double(steps), "tokens": Double(tokens), "seconds": seconds]
        if let privacy {
            metrics["dp_sampling_rate"] = schedule.samplingRate
            metrics["dp_noise_multiplier"] = Double(privacy.noiseMultiplier)
            metrics["dp_steps"] = Double(steps)
            metrics["dp_max_gradient_norm"] = Double(privacy.maxGradientNorm)
        }
        return ModelUpdate(school: school, round: round, baseVersion: baseVersion, delta: model.parameters,
                           exampleCount: data.count, metrics: metrics)
    }

    /// FNV-1a of the school id: a seed component stable across processes (unlike `hashValue`).
    static func stableHash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }
}
