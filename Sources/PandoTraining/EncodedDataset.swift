import Foundation
import PandoData
import PandoEngine
import PandoText

/// Labeled examples tokenised once: what every training loop iterates over.
public struct EncodedDataset: Sendable {
    public let task: TaskKind
    public let labelCount: Int
    public let sequences: [[Int32]]
    public let targets: [Target]

    public init(_ data: LabeledDataset, tokenizer: BertTokenizer, maxLength: Int) {
        task = data.task
        labelCount = data.labels.count
        sequences = data.examples.map { tokenizer.encode($0.text, maxLength: maxLength).ids }
        targets = data.examples.map(\.target)
    }

    public var count: Int { sequences.count }

    /// The engine's targets for the examples at `positions`.
    public func targets(at positions: [Int]) -> Targets {
        switch task {
        case .classification: .classes(positions.map { targets[$0].classIndex! })
        case .multiLabel: .multiHot(positions.flatMap { targets[$0].multiHot(count: labelCount) })
        case .regression: .scores(positions.map { targets[$0].score! })
        // The ordinal head's K − 1 thresholds: 1 where the level is above threshold k.
        case .ordinal: .multiHot(positions.flatMap { p in (0..<(labelCount - 1)).map { Float(targets[p].classIndex! > $0 ? 1 : 0) } })
        }
    }
}

/// What one pass over the training data did.
public struct EpochStatistics: Sendable {
    public var steps = 0
    public var tokens = 0
    public var lossSum = 0.0
    public var lastLearningRate: Float = 0
    public var meanLoss: Double { lossSum / Double(max(steps, 1)) }
}

extension FineTuner {
    /// Runs one update per batch of `plan` (positions into `data`), stopping
    /// with an error naming the step if the loss stops being finite.
    /// `onStep` sees the running statistics after every update.
    public func runEpoch(
        _ plan: [[Int]], data: EncodedDataset, classWeights: [Float]? = nil,
        onStep: (EpochStatistics) -> Void = { _ in }
    ) throws -> EpochStatistics {
        var stats = EpochStatistics()
        for positions in plan {
            let batch = PackedBatch(sequences: positions.map { data.sequences[$0] })
            let result = step(batch, targets: data.targets(at: positions), classWeights: classWeights)
            guard result.loss.isFinite else {
                throw TrainingError("loss became \(result.loss) at update \(step) (epoch step \(stats.steps + 1)); lower the learning rate")
            }
            stats.steps += 1
            stats.tokens += batch.tokenCount
            stats.lossSum += Double(result.loss)
            stats.lastLearningRate = result.learningRate
            onStep(stats)
        }
        return stats
    }
}

extension FineTuner {
    /// Runs `steps` DP-SGD updates: each samples every example of `data` independently
    /// with probability `samplingRate` (Poisson sampling, as the accountant assumes) and
    /// cuts the sample into chunks that fit the workspace. `onStep` sees the running
    /// statistics after every update.
    public func runPrivateSteps(
        _ steps: Int, data: EncodedDataset, samplingRate: Double, privacy: DPSGDSettings, randomness: DPRandomness,
        classWeights: [Float]? = nil, onStep: (EpochStatistics) -> Void = { _ in }
    ) throws -> EpochStatistics {
        var stats = EpochStatistics()
        let capacity = workspace.capacity
        for _ in 0..<steps {
            let chosen = randomness.poissonSample(count: data.count, rate: samplingRate)
            var chunks: [(batch: PackedBatch, targets: Targets)] = []
            var start = 0
            while start < chosen.count {
                var end = start, tokens = 0
                while end < chosen.count, end - start < capacity.sequences,
                      tokens + data.sequences[chosen[end]].count <= capacity.tokens {
                    tokens += data.sequences[chosen[end]].count
                    end += 1
                }
                let positions = Array(chosen[start..<end])
                chunks.append((PackedBatch(sequences: positions.map { data.sequences[$0] }), data.targets(at: positions)))
                stats.tokens += tokens
                start = end
            }
            let result = privateStep(chunks, privacy: privacy, noise: randomness, classWeights: classWeights)
            if result.examples > 0 {
                guard result.loss.isFinite else {
                    throw TrainingError("loss became \(result.loss) at update \(step) (step \(stats.steps + 1) of \(steps)); lower the learning rate")
                }
                stats.lossSum += Double(result.loss)
            }
            stats.steps += 1
            stats.lastLearningRate = result.learningRate
            onStep(stats)
        }
        return stats
    }
}
