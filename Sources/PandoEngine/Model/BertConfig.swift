import Foundation

/// The architecture read from a Hugging Face `config.json`.
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

    public var vocabSize: Int
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    public var intermediateSize: Int
    public var maxPositions: Int
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
                classifierDropout: Float? = nil, padTokenID: Int = 0) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.layers = layers
        self.heads = heads
        self.intermediateSize = intermediateSize
        self.maxPositions = maxPositions
        self.typeVocabSize = typeVocabSize
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
        if case .string(let type)? = object["model_type"], !["bert"].contains(type) {
            throw ConfigError(path: path, field: "model_type", reason: "'\(type)' is not supported (supported: bert)")
        }
        if case .string(let kind)? = object["position_embedding_type"], kind != "absolute" {
            throw ConfigError(path: path, field: "position_embedding_type", reason: "'\(kind)' is not supported (supported: absolute)")
        }
        vocabSize = try int("vocab_size")
        hiddenSize = try int("hidden_size")
        layers = try int("num_hidden_layers")
        heads = try int("num_attention_heads")
        intermediateSize = try int("intermediate_size")
        maxPositions = try int("max_position_embeddings", default: 512)
        typeVocabSize = try int("type_vocab_size", default: 2)
        padTokenID = try int("pad_token_id", default: 0)
        layerNormEps = try float("layer_norm_eps", default: 1e-12)!
        hiddenDropout = try float("hidden_dropout_prob", default: 0.1)!
        attentionDropout = try float("attention_probs_dropout_prob", default: 0.1)!
        classifierDropout = try float("classifier_dropout", default: nil)
        switch object.removeValue(forKey: "hidden_act") {
        case nil, .string("gelu")?: activation = .gelu
        case .string("gelu_new")?, .string("gelu_pytorch_tanh")?: activation = .geluTanh
        case .string("relu")?: activation = .relu
        case let other?: throw ConfigError(path: path, field: "hidden_act", reason: "\(other) is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)")
        }
        guard hiddenSize > 0, heads > 0, hiddenSize % heads == 0 else {
            throw ConfigError(path: path, field: "num_attention_heads", reason: "hidden_size \(hiddenSize) is not divisible by \(heads) heads")
        }
        for (name, p) in [("hidden_dropout_prob", hiddenDropout), ("attention_probs_dropout_prob", attentionDropout)] where !(0..<1).contains(p) {
            throw ConfigError(path: path, field: name, reason: "\(p) is not a probability in [0, 1)")
        }
        extra = object
    }

    /// The config as a JSON object in Hugging Face's key names, including
    /// the preserved extra keys.
    public var jsonObject: [String: JSONValue] {
        var o = extra
        o["model_type"] = .string("bert")
        o["vocab_size"] = .number(Double(vocabSize))
        o["hidden_size"] = .number(Double(hiddenSize))
        o["num_hidden_layers"] = .number(Double(layers))
        o["num_attention_heads"] = .number(Double(heads))
        o["intermediate_size"] = .number(Double(intermediateSize))
        o["max_position_embeddings"] = .number(Double(maxPositions))
        o["type_vocab_size"] = .number(Double(typeVocabSize))
        o["pad_token_id"] = .number(Double(padTokenID))
        o["layer_norm_eps"] = .number(Double(layerNormEps))
        o["hidden_dropout_prob"] = .number(Double(hiddenDropout))
        o["attention_probs_dropout_prob"] = .number(Double(attentionDropout))
        o["classifier_dropout"] = classifierDropout.map { .number(Double($0)) } ?? .null
        o["hidden_act"] = .string(activation == .gelu ? "gelu" : activation == .geluTanh ? "gelu_new" : "relu")
        o["position_embedding_type"] = .string("absolute")
        return o
    }
}
