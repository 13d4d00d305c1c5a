import Foundation
import PandoData
import PandoEngine
import PandoText

/// Runs a model over many token sequences in batches of similar length and
/// returns results in input order. One inference workspace, allocated once.
public final class BatchedInference {
    public let model: BertModel
    public let batchSize: Int
    public let maxLength: Int
    private var workspace: BertWorkspace?

    public init(model: BertModel, batchSize: Int, maxLength: Int) {
        self.model = model
        self.batchSize = max(1, batchSize)
        self.maxLength = min(maxLength, model.config.maxPositions)
    }

    private func ensureWorkspace() -> BertWorkspace {
        if let workspace { return workspace }
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batchSize, length: maxLength), training: false)
        workspace = ws
        return ws
    }

    /// Batches of input positions, longest first, so each batch holds similar lengths.
    static func lengthBatches(_ sequences: [[Int32]], batchSize: Int) -> [[Int]] {
        let order = sequences.indices.sorted { (sequences[$0].count, $1) > (sequences[$1].count, $0) }
        return stride(from: 0, to: order.count, by: batchSize).map { Array(order[$0..<min($0 + batchSize, order.count)]) }
    }

    /// Applies `body` to each batch (positions into `sequences`, the packed batch, the workspace).
    func forEachBatch(_ sequences: [[Int32]], _ body: ([Int], PackedBatch, BertWorkspace) -> Void) {
        let ws = ensureWorkspace()
        for positions in Self.lengthBatches(sequences, batchSize: batchSize) {
            let batch = PackedBatch(sequences: positions.map { Array(sequences[$0].prefix(maxLength)) })
            body(positions, batch, ws)
        }
    }

    /// The head's logits per sequence (`head.outputs` each).
    public func logits(_ sequences: [[Int32]]) -> [[Float]] {
        var result = [[Float]](repeating: [], count: sequences.count)
        let C = model.head.outputs
        forEachBatch(sequences) { positions, batch, ws in
            let z = model.forward(batch, workspace: ws)
            for (b, i) in positions.enumerated() { result[i] = Array(UnsafeBufferPointer(start: z.base + b * C, count: C)) }
        }
        return result
    }

    /// Pooled sentence vectors, optionally L2-normalised (as `torch.nn.functional.normalize`).
    public func embeddings(_ sequences: [[Int32]], pooling: Pooling = .mean, normalize: Bool = true) -> [[Float]] {
        var result = [[Float]](repeating: [], count: sequences.count)
        let H = model.config.hiddenSize
        forEachBatch(sequences) { positions, batch, ws in
            model.encode(batch, workspace: ws)
            let pooled = model.pool(batch, workspace: ws, pooling: pooling)
            for (b, i) in positions.enumerated() {
                var v = Array(UnsafeBufferPointer(start: pooled.base + b * H, count: H))
                if normalize {
                    var norm: Double = 0
                    for x in v { norm += Double(x) * Double(x) }
                    let inv = Float(1 / max(norm.squareRoot(), 1e-12))
                    for j in v.indices { v[j] *= inv }
                }
                result[i] = v
            }
        }
        return result
    }
}

/// A fine-tuned checkpoint folder: weights, tokenizer, head and (when Pando
/// trained it) `pando-training.json`.
public final class FineTunedModel {
    public let folder: URL
    public let model: BertModel
    public let tokenizer: BertTokenizer
    public let record: TrainingRecord?
    public let task: TaskKind
    public let labels: [String]
    public let maxLength: Int
    /// Multi-label thresholds (from training, else 0.5 each).
    public var thresholds: [Float]
    public var scoreRange: [Int]?

    public init(folder: URL) throws {
        self.folder = folder
        let record = try TrainingRecord.read(from: folder)
        var head: ClassifierHead?
        if let record {
            head = ClassifierHead(objective: record.task.objective,
                                  labels: record.task == .regression ? Array(record.labels.prefix(1)) : record.labels,
                                  pooling: record.pooling)
        }
        let (model, _) = try BertModel.load(from: folder, head: head)
        self.model = model
        self.tokenizer = try BertTokenizer(folder: folder)
        self.record = record
        task = TaskKind(objective: model.head.objective)
        labels = model.head.labels
        maxLength = min(record?.maxLength ?? 128, model.config.maxPositions)
        thresholds = record?.thresholds ?? [Float](repeating: 0.5, count: model.head.outputs)
        scoreRange = record?.scoreRange
    }

    public func encode(_ texts: [String]) -> [[Int32]] {
        texts.map { tokenizer.encode($0, maxLength: maxLength).ids }
    }

    /// Metrics on a labeled data set (its labels must be this model's label map).
    public func evaluate(_ data: LabeledDataset, batchSize: Int = 64) throws -> EvaluationMetrics {
        let runner = BatchedInference(model: model, batchSize: batchSize, maxLength: maxLength)
        let logits = runner.logits(encode(data.examples.map(\.text)))
        let range = scoreRange ?? (task == .regression ? Evaluation.inferScoreRange(data.examples.map { $0.target.score! }) : nil)
        return try Evaluation.metrics(logits: logits, targets: data.examples.map(\.target), task: task,
                                      labels: labels, thresholds: task == .multiLabel ? thresholds : nil, scoreRange: range)
    }

    /// The label map a data file is read with.
    public var labelMap: LabelMap? { task == .regression ? nil : try? LabelMap(names: labels) }

    /// Predictions in input order.
    public func predict(_ texts: [String], batchSize: Int = 64) -> [Prediction] {
        let runner = BatchedInference(model: model, batchSize: batchSize, maxLength: maxLength)
        return runner.logits(encode(texts)).map(prediction)
    }

    func prediction(_ z: [Float]) -> Prediction {
        switch task {
        case .classification:
            let p = Evaluation.softmax(z)
            return Prediction(label: labels[Evaluation.argmax(z)], labels: nil, probabilities: p, score: nil)
        case .multiLabel:
            let p = Evaluation.sigmoid(z)
            return Prediction(label: nil, labels: p.indices.filter { p[$0] >= thresholds[$0] }.map { labels[$0] }, probabilities: p, score: nil)
        case .regression:
            return Prediction(label: nil, labels: nil, probabilities: nil, score: z[0])
        case .ordinal:
            return Prediction(label: labels[Evaluation.ordinalLevel(z)], labels: nil, probabilities: Evaluation.ordinalProbabilities(z), score: nil)
        }
    }

    /// Gradient × input attributions for each text: for token t,
    /// `Σⱼ (∂f/∂eₜⱼ) · wₜⱼ`, where `eₜ` is the token's summed input embedding
    /// (word + position + type), `wₜ` its word embedding, and `f` the explained
    /// output: the log-probability of the predicted class (classification),
    /// log σ of the most probable label (multi-label), or the score (regression).
    ///
    /// Computed by `BertModel.attributions` in batches.
    public func explain(_ texts: [String], batchSize: Int = 16) throws -> [Explanation] {
        guard !model.inferenceOnly else {
            throw TrainingError("explanations need gradients, which an int8 checkpoint cannot give: explain with the float32 model")
        }
        let sequences = encode(texts)
        let C = model.head.outputs
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batchSize, length: maxLength), training: true)
        var result: [Explanation] = []
        for start in stride(from: 0, to: sequences.count, by: batchSize) {
            let part = Array(sequences[start..<min(start + batchSize, sequences.count)])
            let batch = PackedBatch(sequences: part)
            let logits = model.forward(batch, workspace: ws).array
            // ∂f/∂z per row for the explained quantity f.
            var gradients = [Float](repeating: 0, count: part.count * C)
            var outputs: [Int] = []
            for b in part.indices {
                let z = Array(logits[b * C..<(b + 1) * C])
                switch task {
                case .classification:
                    // f = log p_o of the predicted class: ∂f/∂z = onehot(o) − p.
                    let o = Evaluation.argmax(z), p = Evaluation.softmax(z)
                    for c in 0..<C { gradients[b * C + c] = (c == o ? 1 : 0) - p[c] }
                    outputs.append(o)
                case .multiLabel:
                    // f = log σ(z_o) of the most probable label: ∂f/∂z_o = 1 − σ(z_o).
                    let o = Evaluation.argmax(z)
                    gradients[b * C + o] = 1 - Evaluation.sigmoid([z[o]])[0]
                    outputs.append(o)
                case .regression:
                    // f = the score itself.
                    gradients[b * C] = 1
                    outputs.append(0)
                case .ordinal:
                    // f = the sum of the thresholds' logits, the shared score w·x that orders the levels.
                    for c in 0..<C { gradients[b * C + c] = 1 }
                    outputs.append(Evaluation.ordinalLevel(z))
                }
            }
            let scores = model.attributions(batch, logitGradients: gradients, workspace: ws)
            var offset = 0
            for (b, ids) in part.enumerated() {
                let pieces = ids.indices.map { t in
                    TokenScore(token: tokenizer.token(for: ids[t]) ?? "[\(ids[t])]", score: scores[offset + t])
                }
                offset += ids.count
                result.append(Explanation(output: task == .regression ? "score" : labels[outputs[b]], tokens: pieces,
                                          words: Self.mergeWords(pieces, specials: specialTokens)))
            }
        }
        return result
    }

    var specialTokens: Set<String> {
        [tokenizer.options.classifierToken, tokenizer.options.separatorToken, tokenizer.options.paddingToken]
    }

    /// Word pieces merged into words: a `##` piece joins the word before it and
    /// adds its score; special tokens are left out.
    static func mergeWords(_ pieces: [TokenScore], specials: Set<String>) -> [TokenScore] {
        var words: [TokenScore] = []
        for p in pieces where !specials.contains(p.token) {
            if p.token.hasPrefix("##"), !words.isEmpty {
                words[words.count - 1].token += p.token.dropFirst(2)
                words[words.count - 1].score += p.score
            } else {
                words.append(p)
            }
        }
        return words
    }
}

/// One model output for one text.
public struct Prediction: Sendable {
    public var label: String?
    public var labels: [String]?
    public var probabilities: [Float]?
    public var score: Float?
}

public struct TokenScore: Sendable, Equatable, Codable {
    public var token: String
    public var score: Float
}

/// Which tokens pushed the explained output up (positive) or down (negative).
public struct Explanation: Sendable {
    /// The label (or "score") explained.
    public var output: String
    /// Word pieces, special tokens included, with their attribution.
    public var tokens: [TokenScore]
    /// Whole words (pieces merged, scores summed).
    public var words: [TokenScore]
}

/// JSON Lines output of `pando predict`.
public enum PredictionOutput {
    struct Line: Encodable {
        var line: Int?
        var label: String?
        var labels: [String]?
        var probabilities: [String: Float]?
        var score: Float?
        var explained: String?
        var tokens: [TokenScore]?
        var words: [TokenScore]?
    }

    /// One JSON object (no newline): `label` + `probabilities` (classification),
    /// `labels` + `probabilities` (multi-label) or `score` (regression); with an
    /// explanation, `explained`, `tokens` and `words`.
    public static func json(_ p: Prediction, labels: [String], line: Int? = nil, explanation: Explanation? = nil) throws -> String {
        let probabilities = p.probabilities.map { Dictionary(uniqueKeysWithValues: zip(labels, $0)) }
        let value = Line(line: line, label: p.label, labels: p.labels, probabilities: probabilities, score: p.score,
                         explained: explanation?.output, tokens: explanation?.tokens, words: explanation?.words)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
