import Foundation

/// What happened while loading a checkpoint, for the user to see.
public struct LoadReport: Sendable, Equatable {
    /// Tensors the checkpoint did not have (or had with another shape, for
    /// the head) and that were freshly initialised instead.
    public var initialized: [String] = []
    /// Tensors in the checkpoint that the model does not use.
    public var unused: [String] = []
    /// The dtype the weights were stored in (F32, F16, BF16).
    public var storedTypes: Set<String> = []
}

/// A checkpoint problem that names the file and the tensor.
public struct CheckpointError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

extension BertModel {
    /// Loads a Hugging Face BERT-family folder (BERT, DistilBERT or RoBERTa, by the
    /// config's `model_type`): `config.json` and `model.safetensors` (F32, F16 or BF16;
    /// encoder names with or without the `bert.`/`distilbert.`/`roberta.` prefix; old
    /// `gamma`/`beta` LayerNorm names accepted).
    ///
    /// - Parameter head: the head to train. `nil` reads it from the config's
    ///   `id2label` and `problem_type` (a checkpoint Pando or HF fine-tuned).
    ///   A checkpoint head with a different shape, or none, is initialised
    ///   and listed in the report; every encoder tensor must be present with
    ///   the right shape, else the error names it with both shapes.
    public static func load(from folder: URL, head: ClassifierHead? = nil, seed: UInt64 = 0) throws -> (BertModel, LoadReport) {
        let configURL = folder.appendingPathComponent("config.json")
        let weightsURL = folder.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: folder.path) else {
            throw CheckpointError(path: folder.path, reason: "model folder does not exist")
        }
        if Int8Checkpoint.isInt8(folder) {
            let config = try BertConfig(contentsOf: configURL)
            guard let head = try head ?? Self.savedHead(configURL: configURL) else {
                throw CheckpointError(path: configURL.path, reason: "no task head: config.json has no id2label/problem_type")
            }
            return try loadInt8(from: folder, config: config, head: head, seed: seed)
        }
        for url in [configURL, weightsURL] where !FileManager.default.fileExists(atPath: url.path) {
            let hint = FileManager.default.fileExists(atPath: folder.appendingPathComponent("pytorch_model.bin").path)
                ? " (only pytorch_model.bin is present; convert it to safetensors)" : ""
            throw CheckpointError(path: url.path, reason: "missing: a model folder needs config.json and model.safetensors\(hint)")
        }
        let config = try BertConfig(contentsOf: configURL)
        guard let head = try head ?? Self.savedHead(configURL: configURL) else {
            throw CheckpointError(path: configURL.path, reason: "no task head: config.json has no id2label/problem_type, so give the labels explicitly")
        }
        let file = try SafeTensors.File(url: weightsURL)
        let model = BertModel(uninitialized: config, head: head)
        var report = LoadReport()

        // Encoder tensors are named with the family's prefix in a task checkpoint
        // (`bert.embeddings…`) and without it in a bare encoder (`embeddings…`, e.g. MiniLM).
        let family = config.family, encoderPrefix = family.encoderPrefix
        let word = family.embeddingsPrefix + "word_embeddings.weight"
        let prefix: String
        if file.entries[word] != nil { prefix = encoderPrefix }
        else if file.entries[String(word.dropFirst(encoderPrefix.count))] != nil { prefix = "" }
        else {
            let sample = file.entries.keys.sorted().prefix(3).joined(separator: ", ")
            throw CheckpointError(path: weightsURL.path, reason: "no \(family.rawValue) embeddings (config.json's model_type; expected '\(word.dropFirst(encoderPrefix.count))' or '\(word)'; found \(sample)…)")
        }
        // An ordinal head reads nothing of another objective's classifier (a softmax head's
        // biases of the same count are not thresholds): the saved head is of another kind, or
        // one of its classifier tensors is missing or misshapen.
        var foreignHead = false
        if head.objective == .ordinal {
            let saved = (try? savedHead(configURL: configURL)) ?? nil
            foreignHead = (saved.map { $0.objective != .ordinal } ?? false) || model.layout.tensors.contains {
                $0.name.hasPrefix(family.classifierPrefix) && file.entries[$0.name]?.shape != $0.shape
            }
        }
        var used = Set<String>()
        for spec in model.layout.tensors {
            if foreignHead && spec.name.hasPrefix(family.classifierPrefix) {
                model.initialize(spec, seed: seed)
                report.initialized.append(spec.name)
                if file.entries[spec.name] != nil { used.insert(spec.name) }
                continue
            }
            // The classifier may be absent or of another task (re-initialised); the dense
            // layer before it (pooler, pre-classifier, RoBERTa's head dense) may be absent.
            let isHead = spec.name.hasPrefix(family.classifierPrefix)
            let isPooler = spec.name.hasPrefix(family.poolerPrefix)
            let isEncoder = spec.name.hasPrefix(encoderPrefix)
            var candidates = [isEncoder ? prefix + spec.name.dropFirst(encoderPrefix.count) : spec.name]
            if spec.name.contains("LayerNorm") {
                candidates.append(candidates[0].replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma")
                    .replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta"))
            }
            guard let name = candidates.first(where: { file.entries[$0] != nil }), let entry = file.entries[name] else {
                if isHead || isPooler {
                    model.initialize(spec, seed: seed)
                    report.initialized.append(spec.name)
                    continue
                }
                throw CheckpointError(path: weightsURL.path, reason: "tensor '\(candidates[0])' is missing (expected shape \(spec.shape))")
            }
            // A cls or mean head's folder holds its unused dense layer with zero rows (see `save`).
            if isPooler && entry.elementCount == 0 {
                model.initialize(spec, seed: seed)
                if head.pooling == .pooler { report.initialized.append(spec.name) }
                used.insert(name)
                continue
            }
            guard entry.shape == spec.shape else {
                if isHead {
                    model.initialize(spec, seed: seed)
                    report.initialized.append(spec.name)
                    used.insert(name)
                    continue
                }
                throw CheckpointError(path: weightsURL.path, reason: "tensor '\(name)' has shape \(entry.shape), expected \(spec.shape) from config.json")
            }
            try file.read(name, into: model.parameters.view(spec))
            report.storedTypes.insert(entry.dtype.rawValue)
            used.insert(name)
        }
        report.unused = file.entries.keys.filter { !used.contains($0) && !$0.hasSuffix("position_ids") }.sorted()
        return (model, report)
    }

    /// The head recorded in a fine-tuned checkpoint's config, if any.
    static func savedHead(configURL: URL) throws -> ClassifierHead? {
        guard case .object(let o) = try JSONValue.parse(try Data(contentsOf: configURL), path: configURL.path) else { return nil }
        var labels: [String] = []
        if case .object(let map)? = o["id2label"] {
            let pairs = map.compactMap { key, value -> (Int, String)? in
                guard let i = Int(key), case .string(let s) = value else { return nil }
                return (i, s)
            }.sorted { $0.0 < $1.0 }
            guard pairs.map(\.0) == Array(0..<pairs.count) else {
                throw CheckpointError(path: configURL.path, reason: "id2label keys are not 0..<\(pairs.count)")
            }
            labels = pairs.map(\.1)
        }
        var pooling = Pooling.pooler
        if case .string(let s)? = o["pando_pooling"], let p = Pooling(rawValue: s) { pooling = p }
        if case .string(Objective.ordinal.rawValue)? = o["pando_objective"] {
            guard labels.count >= 2 else { throw CheckpointError(path: configURL.path, reason: "an ordinal head needs at least two levels in id2label") }
            return ClassifierHead(objective: .ordinal, labels: labels, pooling: pooling)
        }
        switch o["problem_type"] {
        case .string("regression")?: return ClassifierHead(objective: .meanSquaredError, labels: labels.isEmpty ? ["score"] : Array(labels.prefix(1)), pooling: pooling)
        case .string("multi_label_classification")?: return labels.isEmpty ? nil : ClassifierHead(objective: .sigmoidBinaryCrossEntropy, labels: labels, pooling: pooling)
        case .string("single_label_classification")?: return labels.isEmpty ? nil : ClassifierHead(objective: .softmaxCrossEntropy, labels: labels, pooling: pooling)
        default:
            // Hugging Face writes id2label {LABEL_0, LABEL_1} for every plain BertModel; that is not a head.
            let generic = labels.enumerated().allSatisfy { $1 == "LABEL_\($0)" }
            return labels.isEmpty || generic ? nil : ClassifierHead(objective: .softmaxCrossEntropy, labels: labels, pooling: pooling)
        }
    }

    /// Writes `config.json` and `model.safetensors` in the layout of the family's
    /// `…ForSequenceClassification` (BERT, DistilBERT, RoBERTa), so `AutoModelForSequenceClassification
    /// .from_pretrained(folder)` loads it. `copying` lists extra files (the
    /// tokenizer's `vocab.txt`, `tokenizer_config.json`) to place beside them.
    /// Each file is written atomically.
    ///
    /// A cls or mean head's unused dense layer is written with zero rows (so transformers refuses
    /// the folder); `fullDenseLayer` writes it whole, as Pando did before, only so a school can
    /// rebuild the id of a federation's base version made then.
    public func save(to folder: URL, copying files: [URL] = [], metadata: [String: String] = [:], fullDenseLayer: Bool = false) throws {
        guard !inferenceOnly else {
            throw CheckpointError(path: folder.path, reason: "a model loaded from an int8 checkpoint has no float32 weights to save")
        }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var config = self.config.jsonObject
        let family = self.config.family
        // A head transformers cannot express names the bare encoder class (what transformers can
        // load of it), says why in `pando_transformers`, and is refused by
        // AutoModelForSequenceClassification instead of loaded into a head that computes something
        // else: an ordinal head's one-row classifier, and the unused dense layer of a cls or mean
        // head written with zero rows, do not have the shapes transformers builds from the config.
        let limitation = head.transformersLimitation
        config["architectures"] = .array([.string(limitation == nil ? family.sequenceClassifier : family.baseModelClass)])
        if let limitation {
            config["pando_transformers"] = .string("transformers' \(family.sequenceClassifier) cannot compute this head (\(limitation)); "
                + "AutoModelForSequenceClassification refuses the folder by shape. The encoder loads with AutoModel"
                + (family == .bert && head.pooling != .pooler ? " (add_pooling_layer=False)" : "") + "; predict with pando predict or pando serve.")
        } else {
            config.removeValue(forKey: "pando_transformers")
        }
        let labels = head.objective == .meanSquaredError ? (head.labels.isEmpty ? ["score"] : [head.labels[0]]) : head.labels
        config["id2label"] = .object(Dictionary(uniqueKeysWithValues: labels.enumerated().map { ("\($0)", .string($1)) }))
        config["label2id"] = .object(Dictionary(labels.enumerated().map { ($1, .number(Double($0))) }, uniquingKeysWith: { a, _ in a }))
        let problem: String = switch head.objective {
        case .softmaxCrossEntropy: "single_label_classification"
        case .sigmoidBinaryCrossEntropy: "multi_label_classification"
        case .meanSquaredError: "regression"
        // Hugging Face has no ordinal head: its loader refuses the one-row classifier by
        // shape rather than misread it; `pando_objective` says what the head is.
        case .ordinal: "single_label_classification"
        }
        config["problem_type"] = .string(problem)
        if head.objective == .ordinal { config["pando_objective"] = .string(Objective.ordinal.rawValue) } else { config.removeValue(forKey: "pando_objective") }
        config["pando_pooling"] = .string(head.pooling.rawValue)
        config.removeValue(forKey: "num_labels")
        try AtomicFile.write(try JSONValue.object(config).serialized(), to: folder.appendingPathComponent("config.json"))
        // A cls or mean head never reads the family's dense layer: it is written with zero rows
        // (no values), so transformers refuses to build its pooler head from the folder.
        let unusedPooler = head.pooling != .pooler && !fullDenseLayer
        let tensors = layout.tensors.map { spec -> SafeTensors.Tensor in
            if unusedPooler && spec.name.hasPrefix(family.poolerPrefix) {
                return SafeTensors.Tensor(name: spec.name, shape: [0] + spec.shape.dropFirst(), values: parameters.view(spec).slice(0, 0))
            }
            return SafeTensors.Tensor(name: spec.name, shape: spec.shape, values: parameters.view(spec))
        }
        var meta = metadata
        meta["format"] = "pt"
        try SafeTensors.write(tensors, metadata: meta, to: folder.appendingPathComponent("model.safetensors"))
        for file in files {
            let destination = folder.appendingPathComponent(file.lastPathComponent)
            guard file.standardizedFileURL != destination.standardizedFileURL else { continue }
            try AtomicFile.write(try Data(contentsOf: file), to: destination)
        }
    }
}
