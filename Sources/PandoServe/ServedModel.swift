import Foundation
import PandoData
import PandoEngine
import PandoLedger
import PandoTraining

/// The checkpoint `pando serve` answers with: a fine-tuned folder, or a global version of a
/// coordinator's checkpoint store (read in place, its weights checked against its id).
public final class ServedModel: @unchecked Sendable {
    public let checkpoint: FineTunedModel
    /// The version id when served from a store, else nil.
    public let version: String?
    /// SHA-256 of model.safetensors (hex).
    public let weightsSHA256: String
    public let int8: Bool
    /// Pooling of /embed: the head's own (cls or mean), mean for a pooler head.
    public let embeddingPooling: Pooling
    /// Serialises the inference runner (one workspace); the queue's worker is its only user.
    private let runner: BatchedInference

    /// - Parameters:
    ///   - reference: a model folder, or with `store` a version (id, unique prefix, tag, `head`).
    ///   - store: a coordinator's state folder (state.sqlite, versions/).
    public init(reference: String, store: URL?, int8: Bool, maxBatchSequences: Int) throws {
        let folder: URL
        if let store {
            let ledger = try CoordinatorLedger(folder: store, readOnly: true)
            defer { ledger.close() }
            let v = try ledger.version(reference)
            guard ledger.store.hasWeights(v.id) else { throw ServeError("version \(v.id) has no weights on disk (pruned)") }
            folder = ledger.store.folder(of: v.id)
            version = v.id
        } else {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: reference, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ServeError("--model \(reference): no such folder (to serve a version of a coordinator's store, add --store DIR)")
            }
            folder = URL(fileURLWithPath: reference)
            version = nil
        }
        let weights = folder.appendingPathComponent("model.safetensors")
        weightsSHA256 = try Digest.sha256(fileAt: weights)
        if let version, version != weightsSHA256 {
            throw ServeError("version \(version): weights on disk do not match their id (corrupt checkpoint)")
        }
        checkpoint = try FineTunedModel(folder: folder)
        if int8 || checkpoint.model.inferenceOnly { checkpoint.model.quantizeForInference() }
        self.int8 = int8 || checkpoint.model.inferenceOnly
        embeddingPooling = checkpoint.model.head.pooling == .pooler ? .mean : checkpoint.model.head.pooling
        runner = BatchedInference(model: checkpoint.model, batchSize: maxBatchSequences, maxLength: checkpoint.maxLength)
    }

    public var task: TaskKind { checkpoint.task }
    public var labels: [String] { checkpoint.labels }
    public var maxLength: Int { checkpoint.maxLength }

    public func encode(_ texts: [String]) -> [[Int32]] { checkpoint.encode(texts) }

    /// One batch (the queue's worker calls this, from one thread at a time).
    public func run(_ kind: InferenceQueue.Kind, _ sequences: [[Int32]]) -> [[Float]] {
        switch kind {
        case .logits: runner.logits(sequences)
        case .embeddings: runner.embeddings(sequences, pooling: embeddingPooling, normalize: true)
        }
    }

    /// One `{"label", "score"}` list for a text's logits, highest score first: softmax
    /// (classification), sigmoid per label with `predicted` at the model's thresholds
    /// (multi-label), the level probabilities with `predicted` on the predicted level
    /// (ordinal), or the one predicted value (regression).
    public func scores(_ z: [Float], topK: Int?) -> [LabelScore] {
        var list: [LabelScore]
        switch task {
        case .classification:
            list = zip(labels, Evaluation.softmax(z)).map { LabelScore(label: $0, score: $1) }
        case .multiLabel:
            let p = Evaluation.sigmoid(z)
            list = p.indices.map { LabelScore(label: labels[$0], score: p[$0], predicted: p[$0] >= checkpoint.thresholds[$0]) }
        case .ordinal:
            let level = Evaluation.ordinalLevel(z)
            list = Evaluation.ordinalProbabilities(z).enumerated().map { LabelScore(label: labels[$0], score: $1, predicted: $0 == level) }
        case .regression:
            return [LabelScore(label: labels.first ?? "score", score: z[0])]
        }
        // Stable: equal scores keep the label order.
        list = list.enumerated().sorted { ($0.element.score, -$0.offset) > ($1.element.score, -$1.offset) }.map(\.element)
        if let topK { list = Array(list.prefix(topK)) }
        return list
    }

    /// What `GET /model` answers.
    public func description(limits: ServeLimits) -> ModelDescription {
        ModelDescription(task: task.rawValue, labels: labels, version: version, sha256: weightsSHA256, int8: int8,
                         maxLength: maxLength, thresholds: task == .multiLabel ? checkpoint.thresholds : nil,
                         scoreRange: task == .regression ? checkpoint.scoreRange : nil,
                         embeddingDimension: checkpoint.model.config.hiddenSize, embeddingPooling: embeddingPooling.rawValue,
                         limits: limits, batching: nil)
    }
}

public struct LabelScore: Codable, Sendable, Equatable {
    public var label: String
    public var score: Float
    /// Multi-label: at or above the label's threshold; ordinal: the predicted level. Absent otherwise.
    public var predicted: Bool?
    public init(label: String, score: Float, predicted: Bool? = nil) {
        self.label = label
        self.score = score
        self.predicted = predicted
    }
}

public struct ModelDescription: Codable, Sendable {
    public var task: String
    public var labels: [String]
    public var version: String?
    public var sha256: String
    public var int8: Bool
    public var maxLength: Int
    public var thresholds: [Float]?
    public var scoreRange: [Int]?
    public var embeddingDimension: Int
    public var embeddingPooling: String
    public var limits: ServeLimits
    /// What the inference worker has done since start (filled in by the server).
    public var batching: BatchingStatistics?
}

public struct BatchingStatistics: Codable, Sendable {
    public var batches: Int
    public var sequences: Int
    public var largestBatch: Int
    public var maxBatchSequences: Int
    public var maxBatchTokens: Int
    public var maxWaitMilliseconds: Double
    public var queueCapacity: Int
    public var waiting: Int
}
