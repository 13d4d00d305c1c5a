/// The Hugging Face architectures Pando runs. All three are the same post-LayerNorm
/// transformer encoder; they differ in tensor names, config keys, whether token types
/// exist, where position ids start and the sequence-classification head. One encoder
/// implementation serves all three, and this type holds every difference in naming.
public enum ModelFamily: String, Sendable, CaseIterable, Codable {
    /// `BertForSequenceClassification`: pooler `tanh(W·h[CLS] + b)`, then `classifier`.
    case bert
    /// `DistilBertForSequenceClassification`: no token types, no pooler; the head is
    /// `pre_classifier`, ReLU, dropout, `classifier` on the first token.
    case distilbert
    /// `RobertaForSequenceClassification`: position ids start after the padding index;
    /// the head is dropout, `classifier.dense`, tanh, dropout, `classifier.out_proj` on `<s>`.
    case roberta

    /// The prefix of every encoder tensor in a task checkpoint (`bert.`, `distilbert.`, `roberta.`).
    public var encoderPrefix: String { rawValue + "." }

    /// The prefix of the embedding tables and their LayerNorm.
    public var embeddingsPrefix: String { encoderPrefix + "embeddings." }

    /// The prefix of encoder layer `l`'s tensors.
    public func layerPrefix(_ l: Int) -> String {
        self == .distilbert ? "distilbert.transformer.layer.\(l)." : encoderPrefix + "encoder.layer.\(l)."
    }

    /// The module names inside a layer, in the order the flat buffer needs them.
    struct LayerModules {
        let query, key, value, attentionOut, norm1, ffnIn, ffnOut, norm2: String
    }

    var layerModules: LayerModules {
        switch self {
        case .bert, .roberta:
            LayerModules(query: "attention.self.query", key: "attention.self.key", value: "attention.self.value",
                         attentionOut: "attention.output.dense", norm1: "attention.output.LayerNorm",
                         ffnIn: "intermediate.dense", ffnOut: "output.dense", norm2: "output.LayerNorm")
        case .distilbert:
            LayerModules(query: "attention.q_lin", key: "attention.k_lin", value: "attention.v_lin",
                         attentionOut: "attention.out_lin", norm1: "sa_layer_norm",
                         ffnIn: "ffn.lin1", ffnOut: "ffn.lin2", norm2: "output_layer_norm")
        }
    }

    /// The module of the dense layer between the first token and the classifier
    /// (BERT's pooler, DistilBERT's pre-classifier, RoBERTa's head dense layer), with a dot.
    public var poolerPrefix: String {
        switch self {
        case .bert: "bert.pooler.dense."
        case .distilbert: "pre_classifier."
        case .roberta: "classifier.dense."
        }
    }

    /// The module of the last linear layer, whose output count is the task's, with a dot.
    public var classifierPrefix: String { self == .roberta ? "classifier.out_proj." : "classifier." }

    /// Whether the model has a token-type (segment) table.
    public var hasTokenTypes: Bool { self != .distilbert }

    /// Whether the pooler's dense layer is followed by ReLU (DistilBERT) rather than tanh.
    var poolerUsesReLU: Bool { self == .distilbert }

    /// Whether the head drops out the first token's state before its dense layer (RoBERTa).
    var dropsOutBeforePooler: Bool { self == .roberta }

    /// Whether each layer applies dropout to the attention output projection (DistilBERT does not).
    var dropsOutAttentionOutput: Bool { self != .distilbert }

    /// The class `save` records in `architectures`.
    public var sequenceClassifier: String {
        switch self {
        case .bert: "BertForSequenceClassification"
        case .distilbert: "DistilBertForSequenceClassification"
        case .roberta: "RobertaForSequenceClassification"
        }
    }

    /// The family's bare encoder class, which `save` records in `architectures` for a head
    /// Hugging Face cannot express (cls or mean pooling, ordinal): the encoder is what
    /// transformers can load of such a folder.
    public var baseModelClass: String {
        switch self {
        case .bert: "BertModel"
        case .distilbert: "DistilBertModel"
        case .roberta: "RobertaModel"
        }
    }

    /// The embedding tables (rows indexed by token, position, type) of this family.
    public var embeddingTables: [String] {
        let p = embeddingsPrefix
        return [p + "word_embeddings.weight", p + "position_embeddings.weight"]
            + (hasTokenTypes ? [p + "token_type_embeddings.weight"] : [])
    }

    /// Whether a tensor name is a LayerNorm parameter (no weight decay; γ = 1, β = 0 at init).
    static func isNorm(_ name: String) -> Bool { name.contains("LayerNorm") || name.contains("layer_norm") }
}
