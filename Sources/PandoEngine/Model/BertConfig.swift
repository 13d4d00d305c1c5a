import Foundation

/// The architecture read from a Hugging Face `config.json` of the BERT family
/// (`model_type` bert, distilbert or roberta; DistilBERT's own key names are mapped).
///
/// Only what the BERT computation needs is typed; every other key of the
/// original file is kept in `extra` and written back on save, so that a
/// round trip through Pando does not lose what Hugging Face put there.
public struct BertConfig: Sendable, Equatable {
    public enum Activation: String, Sendable {
        /// Exact GELU, `0.5·x·(1 + erf(x/√2))`.
        case gelu
        /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
        case geluTanh = "gelu_new"
        case relu
    }

    /// Which architecture's names, head and position numbering apply.
    public var family: ModelFamily
    public var vocabSize: Int
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    /// The longest sequence the position table serves. For RoBERTa that is
    /// `max_position_embeddings − positionOffset`: its first rows belong to padding.
    public var maxPositions: Int
    /// The position id of a sequence's first token: RoBERTa numbers real tokens from
    /// `pad_token_id + 1` (fairseq's convention); BERT and DistilBERT from 0.
    public var positionOffset: Int
    /// Rows of the position table: what `max_position_embeddings` says.
    public var positionRows: Int { maxPositions + positionOffset }
    /// Rows of the token-type table; 0 for DistilBERT, which has none.
    public var typeVocabSize: Int
    public var layerNormEps: Float
    public var activation: Activation
    public var hiddenDropout: Float
    public var attentionDropout: Float
    /// Dropout before the classifier; `nil` means `hiddenDropout`, as in HF.
    public var classifierDropout: Float?
    public var padTokenID: Int
    /// Keys of the source file not modelled above, preserved for saving.
    public var extra: [String: JSONValue]

    public var headSize: Int { hiddenSize / heads }

    public struct ConfigError: Error, CustomStringConvertible {
        public let path: String
        public let field: String
        public let reason: String
        public var description: String { "\(path): field '\(field)': \(reason)" }
    }

    public init(vocabSize: Int, hiddenSize: Int, layers: Int, heads: Int, intermediateSize: Int,
                maxPositions: Int = 512, typeVocabSize: Int = 2, layerNormEps: Float = 1e-12,
                activation: Activation = .gelu, hiddenDropout: Float = 0.1, attentionDropout: Float = 0.1,
                classifierDropout: Float? = nil, padTokenID: Int = 0, family: ModelFamily = .bert) {
        self.family = family
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.layers = layers
        self.heads = heads
        self.intermediateSize = intermediateSize
        self.maxPositions = maxPositions
        self.positionOffset = family == .roberta ? padTokenID + 1 : 0
        self.typeVocabSize = family.hasTokenTypes ? typeVocabSize : 0
        self.layerNormEps = layerNormEps
        self.activation = activation
        self.hiddenDropout = hiddenDropout
        self.attentionDropout = attentionDropout
        self.classifierDropout = classifierDropout
        self.padTokenID = padTokenID
        self.extra = [:]
    }

    /// Reads and validates `config.json`. Errors name the file and the field.
    public init(contentsOf url: URL) throws {
        let path = url.path
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ConfigError(path: path, field: "-", reason: "cannot read the file (\(error.localizedDescription))")
        }
        guard case .object(var object) = try JSONValue.parse(data, path: path) else {
            throw ConfigError(path: path, field: "-", reason: "not a JSON object")
        }
        func int(_ key: String, default value: Int? = nil) throws -> Int {
            guard let v = object.removeValue(forKey: key) else {
                if let value { return value }
                throw ConfigError(path: path, field: key, reason: "missing")
            }
            guard case .number(let d) = v, d == d.rounded(), d >= 0 else {
                throw ConfigError(path: path, field: key, reason: "expected a non-negative integer, found \(v)")
            }
            return Int(d)
        }
        func float(_ key: String, default value: Float?) throws -> Float? {
            guard let v = object.removeValue(forKey: key) else { return value }
            if case .null = v { return value }
            guard case .number(let d) = v else { throw ConfigError(path: path, field: key, reason: "expected a number, found \(v)") }
            return Float(d)
        }
        switch object.removeValue(forKey: "model_type") {
        case nil: family = .bert
        case .string(let type)?:
            guard let f = ModelFamily(rawValue: type) else {
                throw ConfigError(path: path, field: "model_type", reason: "'\(type)' is not supported (supported: bert, distilbert, roberta)")
            }
            family = f
        case let other?: throw ConfigError(path: path, field: "model_type", reason: "expected a string, found \(other)")
        }
        if case .string(let kind)? = object["position_embedding_type"], kind != "absolute" {
            throw ConfigError(path: path, field: "position_embedding_type", reason: "'\(kind)' is not supported (supported: absolute)")
        }
        func readActivation(_ key: String) throws -> Activation {
            switch object.removeValue(forKey: key) {
            case nil, .string("gelu")?: return .gelu
            case .string("gelu_new")?, .string("gelu_pytorch_tanh")?: return .geluTanh
            case .string("relu")?: return .relu
            case let other?: throw ConfigError(path: path, field: key, reason: "\(other) is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)")
            }
        }
        let rows: Int
        if family == .distilbert {
            // DistilBERT's names; its LayerNorms are fixed at ε = 1e-12 and it has no segments.
            if case .bool(true)? = object["sinusoidal_pos_embds"] {
                throw ConfigError(path: path, field: "sinusoidal_pos_embds", reason: "sinusoidal (frozen) position embeddings are not supported; only learned ones")
            }
            vocabSize = try int("vocab_size")
            hiddenSize = try int("dim")
            layers = try int("n_layers")
            heads = try int("n_heads")
            intermediateSize = try int("hidden_dim")
            rows = try int("max_position_embeddings", default: 512)
            typeVocabSize = 0
            padTokenID = try int("pad_token_id", default: 0)
            layerNormEps = 1e-12
            hiddenDropout = try float("dropout", default: 0.1)!
            attentionDropout = try float("attention_dropout", default: 0.1)!
            classifierDropout = try float("seq_classif_dropout", default: 0.2)
            activation = try readActivation("activation")
            for (name, p) in [("dropout", hiddenDropout), ("attention_dropout", attentionDropout), ("seq_classif_dropout", classifierDropout ?? 0)] where !(0..<1).contains(p) {
                throw ConfigError(path: path, field: name, reason: "\(p) is not a probability in [0, 1)")
            }
        } else {
            vocabSize = try int("vocab_size")
            hiddenSize = try int("hidden_size")
            layers = try int("num_hidden_layers")
            heads = try int("num_attention_heads")
            intermediateSize = try int("intermediate_size")
            rows = try int("max_position_embeddings", default: 512)
            typeVocabSize = try int("type_vocab_size", default: 2)
            padTokenID = try int("pad_token_id", default: family == .roberta ? 1 : 0)
            layerNormEps = try float("layer_norm_eps", default: 1e-12)!
            hiddenDropout = try float("hidden_dropout_prob", default: 0.1)!
            attentionDropout = try float("attention_probs_dropout_prob", default: 0.1)!
            classifierDropout = try float("classifier_dropout", default: nil)
            activation = try readActivation("hidden_act")
            for (name, p) in [("hidden_dropout_prob", hiddenDropout), ("attention_probs_dropout_prob", attentionDropout)] where !(0..<1).contains(p) {
                throw ConfigError(path: path, field: name, reason: "\(p) is not a probability in [0, 1)")
            }
            if typeVocabSize == 0 {
                throw ConfigError(path: path, field: "type_vocab_size", reason: "must be at least 1 (token type 0 is always used)")
            }
        }
        positionOffset = family == .roberta ? padTokenID + 1 : 0
        guard rows > positionOffset else {
            throw ConfigError(path: path, field: "max_position_embeddings",
                              reason: "\(rows) rows leave no position for a token (RoBERTa's ids start at pad_token_id + 1 = \(positionOffset))")
        }
        maxPositions = rows - positionOffset
        guard vocabSize > 0 else { throw ConfigError(path: path, field: "vocab_size", reason: "must be positive") }
        let headsField = family == .distilbert ? "n_heads" : "num_attention_heads"
        guard hiddenSize > 0, heads > 0, hiddenSize % heads == 0 else {
            throw ConfigError(path: path, field: headsField, reason: "hidden size \(hiddenSize) is not divisible by \(heads) heads")
        }
        extra = object
    }

    /// The config as a JSON object in Hugging Face's key names, including
    /// the preserved extra keys.
    public var jsonObject: [String: JSONValue] {
        var o = extra
        let act = JSONValue.string(activation == .gelu ? "gelu" : activation == .geluTanh ? "gelu_new" : "relu")
        o["model_type"] = .string(family.rawValue)
        o["vocab_size"] = .number(Double(vocabSize))
        o["max_position_embeddings"] = .number(Double(positionRows))
        o["pad_token_id"] = .number(Double(padTokenID))
        if family == .distilbert {
            o["dim"] = .number(Double(hiddenSize))
            o["n_layers"] = .number(Double(layers))
            o["n_heads"] = .number(Double(heads))
            o["hidden_dim"] = .number(Double(intermediateSize))
            o["dropout"] = .number(Self.decimal(hiddenDropout))
            o["attention_dropout"] = .number(Self.decimal(attentionDropout))
            o["seq_classif_dropout"] = .number(Self.decimal(classifierDropout ?? hiddenDropout))
            o["activation"] = act
            o["sinusoidal_pos_embds"] = .bool(false)
            return o
        }
        o["hidden_size"] = .number(Double(hiddenSize))
        o["num_hidden_layers"] = .number(Double(layers))
        o["num_attention_heads"] = .number(Double(heads))
        o["intermediate_size"] = .number(Double(intermediateSize))
        o["type_vocab_size"] = .number(Double(typeVocabSize))
        o["layer_norm_eps"] = .number(Self.decimal(layerNormEps))
        o["hidden_dropout_prob"] = .number(Self.decimal(hiddenDropout))
        o["attention_probs_dropout_prob"] = .number(Self.decimal(attentionDropout))
        o["classifier_dropout"] = classifierDropout.map { .number(Self.decimal($0)) } ?? .null
        o["hidden_act"] = act
        o["position_embedding_type"] = .string("absolute")
        return o
    }

    /// A Float setting as the shortest decimal that reads back as it (1e-05, not
    /// 9.99999974e-06), so a saved config.json shows the numbers it was given.
    static func decimal(_ value: Float) -> Double { Double("\(value)") ?? Double(value) }

    /// Dropout after each layer's attention output projection: DistilBERT has none there.
    var attentionOutputDropout: Float { family.dropsOutAttentionOutput ? hiddenDropout : 0 }
}
