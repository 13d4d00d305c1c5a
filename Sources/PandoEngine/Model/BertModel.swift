import Foundation

/// How a sequence becomes one vector for the task head.
public enum Pooling: String, Codable, Sendable, CaseIterable {
    /// The family's own sequence-classification head on the first token: BERT's pooler
    /// `tanh(W · h[CLS] + b)`, DistilBERT's `ReLU(pre_classifier · h + b)`, RoBERTa's
    /// `tanh(dense · drop(h[<s>]) + b)`; then dropout and the classifier, as Hugging Face's
    /// `…ForSequenceClassification` of each family computes.
    case pooler
    /// The final [CLS] hidden state itself.
    case cls
    /// The mean of the final hidden states over real tokens (sentence-transformers).
    case mean
}

/// The loss a head is trained with, which fixes how its outputs are read.
public enum Objective: String, Codable, Sendable, CaseIterable {
    /// One label per text: softmax over the outputs, cross-entropy.
    case softmaxCrossEntropy = "softmax"
    /// Any number of labels per text: a sigmoid per output, binary cross-entropy.
    case sigmoidBinaryCrossEntropy = "sigmoid"
    /// A score: one output, mean squared error.
    case meanSquaredError = "mse"
    /// Ordered levels (CORAL, Cao, Mirjalili & Raschka 2020): one weight vector shared by
    /// the K − 1 thresholds and a bias each, so logit k = w·x + b_k scores "level > k" and
    /// the K − 1 probabilities cannot cross in rank; binary cross-entropy over the
    /// thresholds (mean over thresholds and texts); the level is the number of logits > 0.
    case ordinal
}

/// The task head on top of the encoder: pooling, then dropout and one linear layer.
public struct ClassifierHead: Sendable, Equatable, Codable {
    public var objective: Objective
    /// Label names in output order; empty or one name for a score.
    public var labels: [String]
    public var pooling: Pooling

    public init(objective: Objective, labels: [String], pooling: Pooling = .pooler) {
        self.objective = objective
        self.labels = labels
        self.pooling = pooling
    }

    /// A placeholder head for uses that read only the encoder (embeddings,
    /// benchmarks): one output, mean pooling.
    public static let encoderOnly = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["unused"], pooling: .mean)

    /// Number of classifier outputs: one per label, one score, or K − 1 thresholds for K levels.
    public var outputs: Int {
        switch objective {
        case .meanSquaredError: 1
        case .ordinal: labels.count - 1
        case .softmaxCrossEntropy, .sigmoidBinaryCrossEntropy: labels.count
        }
    }

    /// Rows of the classifier's weight: the ordinal head's thresholds share one.
    public var weightRows: Int { objective == .ordinal ? 1 : outputs }

    /// Why transformers' `…ForSequenceClassification` cannot compute this head, or nil when it
    /// computes exactly what Pando does (the family's own pooler head with softmax, sigmoid or a
    /// raw score). Hugging Face's classes always read the first token through the family's
    /// dense layer; they have no mean or bare-first-token pooling and no cumulative-link head.
    public var transformersLimitation: String? {
        if objective == .ordinal { return "an ordinal (cumulative-link) head: K − 1 thresholds sharing one weight row" }
        switch pooling {
        case .pooler: return nil
        case .cls: return "cls pooling: the classifier reads the first token's hidden state without the family's dense layer"
        case .mean: return "mean pooling: the classifier reads the mean of the hidden states over real tokens"
        }
    }
}

/// A BERT encoder with a classification or regression head, all of whose
/// parameters live in one flat buffer named by Hugging Face tensor names.
public final class BertModel: @unchecked Sendable {
    public let config: BertConfig
    public let head: ClassifierHead
    public let layout: ParameterLayout
    public let parameters: ParameterBuffer
    /// The LoRA adapters, when the model has any (``init(lora:base:seed:)``): their tensors
    /// follow the base model's in the layout.
    public let lora: LoRAConfig?
    let offsets: Offsets
    /// Int8 copies of the encoder's linear layers (`quantizeForInference()`), used by
    /// inference workspaces created while it is set.
    public internal(set) var int8: Int8Encoder?
    /// Loaded from an int8 checkpoint: the float32 copies of the quantized weights were never
    /// read, so the model can run inference only (training or gradients would need them).
    public internal(set) var inferenceOnly = false

    /// Offsets of each tensor in the flat buffer, resolved once.
    struct Offsets {
        struct Layer {
            var qkvWeight = 0, qkvBias = 0, attentionOutWeight = 0, attentionOutBias = 0
            var norm1Gamma = 0, norm1Beta = 0, ffnInWeight = 0, ffnInBias = 0
            var ffnOutWeight = 0, ffnOutBias = 0, norm2Gamma = 0, norm2Beta = 0
            /// The adapter on each ``LoRATarget`` (by `index`), if any.
            var adapters = [LoRASlot?](repeating: nil, count: LoRATarget.allCases.count)
        }
        var word = 0, position = 0, tokenType = 0, embeddingGamma = 0, embeddingBeta = 0
        var layers: [Layer] = []
        var poolerWeight = 0, poolerBias = 0, classifierWeight = 0, classifierBias = 0
    }

    /// The parameter layout of a model with `config` and `head`, without allocating it.
    public static func layout(config: BertConfig, head: ClassifierHead, lora: LoRAConfig? = nil) -> ParameterLayout {
        makeLayout(config: config, head: head, lora: lora).0
    }

    /// The tensor names (the config's family's Hugging Face names) and shapes of an
    /// encoder with a head, in the order they sit in the flat buffer. Query, key and value
    /// are adjacent so the three projections run as one GEMM. LoRA adapters, if any, come
    /// last (layer by layer, `A` then `B` of each target), so the base tensors keep the
    /// offsets they have without adapters.
    static func makeLayout(config c: BertConfig, head: ClassifierHead, lora: LoRAConfig? = nil) -> (ParameterLayout, Offsets) {
        var layout = ParameterLayout()
        var o = Offsets()
        let H = c.hiddenSize, I = c.intermediateSize
        func add(_ name: String, _ shape: [Int]) -> Int {
            let decays = !(name.hasSuffix(".bias") || ModelFamily.isNorm(name))
            return layout.append(name, shape: shape, decays: decays).offset
        }
        let f = c.family, e = f.embeddingsPrefix, m = f.layerModules
        o.word = add(e + "word_embeddings.weight", [c.vocabSize, H])
        o.position = add(e + "position_embeddings.weight", [c.positionRows, H])
        // DistilBERT has no token-type table; its offset stays unused (see `hasTokenTypes`).
        if f.hasTokenTypes { o.tokenType = add(e + "token_type_embeddings.weight", [c.typeVocabSize, H]) }
        o.embeddingGamma = add(e + "LayerNorm.weight", [H])
        o.embeddingBeta = add(e + "LayerNorm.bias", [H])
        for l in 0..<c.layers {
            let p = f.layerPrefix(l)
            var L = Offsets.Layer()
            L.qkvWeight = add(p + m.query + ".weight", [H, H])
            _ = add(p + m.key + ".weight", [H, H])
            _ = add(p + m.value + ".weight", [H, H])
            L.qkvBias = add(p + m.query + ".bias", [H])
            _ = add(p + m.key + ".bias", [H])
            _ = add(p + m.value + ".bias", [H])
            L.attentionOutWeight = add(p + m.attentionOut + ".weight", [H, H])
            L.attentionOutBias = add(p + m.attentionOut + ".bias", [H])
            L.norm1Gamma = add(p + m.norm1 + ".weight", [H])
            L.norm1Beta = add(p + m.norm1 + ".bias", [H])
            L.ffnInWeight = add(p + m.ffnIn + ".weight", [I, H])
            L.ffnInBias = add(p + m.ffnIn + ".bias", [I])
            L.ffnOutWeight = add(p + m.ffnOut + ".weight", [H, I])
            L.ffnOutBias = add(p + m.ffnOut + ".bias", [H])
            L.norm2Gamma = add(p + m.norm2 + ".weight", [H])
            L.norm2Beta = add(p + m.norm2 + ".bias", [H])
            o.layers.append(L)
        }
        o.poolerWeight = add(f.poolerPrefix + "weight", [H, H])
        o.poolerBias = add(f.poolerPrefix + "bias", [H])
        o.classifierWeight = add(f.classifierPrefix + "weight", [head.weightRows, H])
        o.classifierBias = add(f.classifierPrefix + "bias", [head.outputs])
        if let lora {
            for l in 0..<c.layers {
                for (position, t) in lora.targets.enumerated() {
                    let (inputs, outputs) = lora.shapes(t, config: c)
                    let a = add(loraName(c, layer: l, target: t, "A"), [lora.rank, inputs])
                    let b = add(loraName(c, layer: l, target: t, "B"), [outputs, lora.rank])
                    o.layers[l].adapters[t.index] = LoRASlot(a: a, b: b, inputs: inputs, outputs: outputs, position: position)
                }
            }
        }
        return (layout, o)
    }

    /// A freshly initialised model, as Hugging Face initialises BERT:
    /// weights `N(0, 0.02²)`, biases 0, LayerNorm γ = 1, β = 0.
    public convenience init(config: BertConfig, head: ClassifierHead, seed: UInt64 = 0, initializerRange: Float = 0.02) {
        self.init(uninitialized: config, head: head)
        for spec in layout.tensors { initialize(spec, seed: seed, range: initializerRange) }
    }

    /// A model whose parameters are all zero, for a loader to fill.
    init(uninitialized config: BertConfig, head: ClassifierHead, lora: LoRAConfig? = nil) {
        precondition(head.outputs > 0, "a head needs at least one output")
        self.config = config
        self.head = head
        self.lora = lora
        (layout, offsets) = Self.makeLayout(config: config, head: head, lora: lora)
        parameters = ParameterBuffer(layout: layout)
    }

    /// Initialises one tensor the way Hugging Face's `_init_weights` does.
    func initialize(_ spec: TensorSpec, seed: UInt64, range: Float = 0.02) {
        let v = parameters.view(spec)
        if head.objective == .ordinal, spec.offset == offsets.classifierBias {
            // Thresholds start where an intercept-only model of equally frequent levels puts
            // them, b_k = logit(P(level > k)) = log((K−1−k)/(k+1)): ordered and about one unit
            // apart. All-zero biases make the middle levels unreachable, and closely spaced
            // ones (which a small learning rate barely moves) send most texts to the extremes.
            let n = spec.count
            for k in 0..<n { v[k] = Float(log(Double(n - k) / Double(k + 1))) }
        } else if ModelFamily.isNorm(spec.name) {
            v.fill(spec.name.hasSuffix(".weight") ? 1 : 0)
        } else if spec.name.hasSuffix(".bias") {
            v.fill(0)
        } else {
            let key = CounterRandom.key(seed, UInt64(spec.offset))
            for i in 0..<v.count { v[i] = range * CounterRandom.normal(key, i) }
            if spec.name.hasSuffix("word_embeddings.weight"), config.padTokenID < config.vocabSize {
                v.slice(config.padTokenID * config.hiddenSize, config.hiddenSize).fill(0)
            }
        }
    }

    // MARK: Pointers into the flat buffer

    @inline(__always) func p(_ offset: Int) -> UnsafeMutablePointer<Float> { parameters.buffer.base + offset }

    /// Number of parameters.
    public var parameterCount: Int { layout.count }
}
