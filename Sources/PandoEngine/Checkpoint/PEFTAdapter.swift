import Foundation

/// LoRA adapters in Hugging Face PEFT's folder format: `adapter_config.json` (peft_type
/// LORA, task_type SEQ_CLS) and `adapter_model.safetensors`, whose tensors are named
/// `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`, plus the head modules
/// listed in `modules_to_save` under `base_model.model.<name>`. `peft.PeftModel
/// .from_pretrained(base, folder)` loads what `savePEFTAdapter` writes.
extension BertModel {
    public static let peftConfigFile = "adapter_config.json"
    public static let peftWeightsFile = "adapter_model.safetensors"
    static let peftPrefix = "base_model.model."

    /// Whether `folder` holds a PEFT adapter.
    public static func isPEFTAdapter(_ folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent(peftConfigFile).path)
    }

    /// Full module names of every linear layer PEFT could match in this model.
    func linearModuleNames() -> [String] {
        var names: [String] = []
        for l in 0..<config.layers {
            for t in LoRATarget.allCases { names.append(config.family.layerPrefix(l) + t.module(config.family)) }
        }
        names.append(String(config.family.poolerPrefix.dropLast()))
        names.append(String(config.family.classifierPrefix.dropLast()))
        return names
    }

    /// PEFT's rule for a list of target names: the module's name is one of them or ends with `.` + one.
    static func peftMatches(_ module: String, _ target: String) -> Bool {
        module == target || module.hasSuffix("." + target)
    }

    /// `target_modules` for PEFT: for each adapted module, the shortest dotted suffix of its
    /// name that PEFT's suffix rule matches to adapted modules only (`query`, `value`;
    /// BERT's feed-forward `output.dense` alone would also match `attention.output.dense`,
    /// so it becomes per-layer `0.output.dense`, …).
    func peftTargetModules() -> [String] {
        guard let lora else { return [] }
        let all = linearModuleNames()
        var adapted = Set<String>()
        for l in 0..<config.layers { for t in lora.targets { adapted.insert(config.family.layerPrefix(l) + t.module(config.family)) } }
        var result: [String] = []
        for module in all where adapted.contains(module) {
            let parts = module.split(separator: ".")
            for k in 1...parts.count {
                let suffix = parts.suffix(k).joined(separator: ".")
                if all.filter({ Self.peftMatches($0, suffix) }).allSatisfy(adapted.contains) {
                    if !result.contains(suffix) { result.append(suffix) }
                    break
                }
            }
        }
        return result
    }

    /// The head modules PEFT must save and train: the classifier, and the dense layer before it
    /// when the head uses it (BERT's `pooler`, DistilBERT's `pre_classifier`; RoBERTa's is
    /// inside `classifier`).
    var peftModulesToSave: [String] {
        var modules = ["classifier"]
        if head.pooling == .pooler {
            switch config.family {
            case .bert: modules.append("pooler")
            case .distilbert: modules.append("pre_classifier")
            case .roberta: break
            }
        }
        return modules
    }

    /// The head tensors `modules_to_save` covers.
    var peftHeadTensors: [TensorSpec] {
        let modules = peftModulesToSave
        return layout.tensors.filter { spec in
            guard !spec.name.contains(".lora_") else { return false }
            let module = spec.name.split(separator: ".").dropLast().joined(separator: ".")
            return modules.contains { m in module == m || module.hasPrefix(m + ".") || module.hasSuffix("." + m) || module.contains("." + m + ".") }
        }
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (each atomically).
    /// `baseModel` is recorded as `base_model_name_or_path`.
    public func savePEFTAdapter(to folder: URL, baseModel: String) throws {
        guard let lora else { throw LoRAError("the model has no LoRA adapters to save") }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let config: [String: JSONValue] = [
            "peft_type": .string("LORA"),
            "task_type": .string("SEQ_CLS"),
            "base_model_name_or_path": .string(baseModel),
            "r": .number(Double(lora.rank)),
            "lora_alpha": .number(Double(lora.alpha)),
            "lora_dropout": .number(Double(lora.dropout)),
            "target_modules": .array(peftTargetModules().map { .string($0) }),
            "modules_to_save": .array(peftModulesToSave.map { .string($0) }),
            "bias": .string("none"),
            "fan_in_fan_out": .bool(false),
            "inference_mode": .bool(true),
            "init_lora_weights": .bool(true),
            "use_rslora": .bool(false),
            "use_dora": .bool(false),
            "layers_to_transform": .null,
            "layers_pattern": .null,
            "rank_pattern": .object([:]),
            "alpha_pattern": .object([:]),
            "revision": .null,
            "pando_lora_targets": .array(lora.targets.map { .string($0.rawValue) }),
        ]
        try AtomicFile.write(try JSONValue.object(config).serialized(), to: folder.appendingPathComponent(Self.peftConfigFile))
        let tensors = (loraTensors + peftHeadTensors).map {
            SafeTensors.Tensor(name: Self.peftPrefix + $0.name, shape: $0.shape, values: parameters.view($0))
        }
        try SafeTensors.write(tensors, metadata: ["format": "pt"], to: folder.appendingPathComponent(Self.peftWeightsFile))
    }

    /// The LoRA model of a PEFT adapter folder on `base` (which has no adapters): the
    /// targets are the linear layers PEFT's `target_modules` selects (a list, by name or
    /// `.`-suffix, or a regular expression matched in full), the same in every layer; the
    /// adapters and any head tensors saved with them are read, the rest comes from `base`.
    public static func loadPEFTAdapter(from folder: URL, base: BertModel) throws -> BertModel {
        let configURL = folder.appendingPathComponent(peftConfigFile), weightsURL = folder.appendingPathComponent(peftWeightsFile)
        func fail(_ url: URL, _ reason: String) -> CheckpointError { CheckpointError(path: url.path, reason: reason) }
        guard FileManager.default.fileExists(atPath: configURL.path) else { throw fail(configURL, "missing: a PEFT adapter folder needs adapter_config.json") }
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            throw fail(weightsURL, "missing (only adapter_model.safetensors is read, not adapter_model.bin)")
        }
        guard case .object(let o) = try JSONValue.parse(try Data(contentsOf: configURL), path: configURL.path) else {
            throw fail(configURL, "not a JSON object")
        }
        guard case .string("LORA")? = o["peft_type"] else { throw fail(configURL, "peft_type is not LORA") }
        for flag in ["use_dora", "use_rslora", "fan_in_fan_out"] {
            if case .bool(true)? = o[flag] { throw fail(configURL, "\(flag) is not supported") }
        }
        if case .string(let bias)? = o["bias"], bias != "none" { throw fail(configURL, "bias '\(bias)' is not supported (only 'none')") }
        if case .object(let m)? = o["rank_pattern"], !m.isEmpty { throw fail(configURL, "rank_pattern is not supported") }
        if case .object(let m)? = o["alpha_pattern"], !m.isEmpty { throw fail(configURL, "alpha_pattern is not supported") }
        if let v = o["layers_to_transform"], v != .null { throw fail(configURL, "layers_to_transform is not supported") }
        guard case .number(let r)? = o["r"], case .number(let alpha)? = o["lora_alpha"] else { throw fail(configURL, "needs r and lora_alpha") }
        var dropout = 0.0
        if case .number(let d)? = o["lora_dropout"] { dropout = d }

        let matches: (String) -> Bool
        switch o["target_modules"] {
        case .array(let items)?:
            let names = items.compactMap { if case .string(let s) = $0 { s } else { nil } }
            matches = { module in names.contains { peftMatches(module, $0) } }
        case .string(let pattern)?:
            let regex: NSRegularExpression
            do { regex = try NSRegularExpression(pattern: "^(?:" + pattern + ")$") } catch {
                throw fail(configURL, "target_modules '\(pattern)' is not a regular expression Pando can read")
            }
            matches = { module in regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil }
        default:
            throw fail(configURL, "target_modules must be a list of names or a regular expression")
        }
        let c = base.config
        var targets: [LoRATarget] = []
        for t in LoRATarget.allCases {
            let hits = (0..<c.layers).map { matches(c.family.layerPrefix($0) + t.module(c.family)) }
            if hits.allSatisfy({ $0 }) { targets.append(t) } else if hits.contains(true) {
                throw fail(configURL, "target_modules adapts \(t.rawValue) in some layers only; Pando adapts every layer or none")
            }
        }
        guard !targets.isEmpty else { throw fail(configURL, "target_modules matches none of the model's attention or feed-forward layers") }
        let lora = LoRAConfig(rank: Int(r), alpha: Float(alpha), dropout: Float(dropout), targets: targets)
        let model: BertModel
        do { model = try BertModel(lora: lora, base: base) } catch { throw fail(configURL, "\(error)") }

        let file = try SafeTensors.File(url: weightsURL)
        for spec in model.loraTensors {
            guard let name = [peftPrefix + spec.name, spec.name].first(where: { file.entries[$0] != nil }), let entry = file.entries[name] else {
                throw fail(weightsURL, "tensor '\(peftPrefix + spec.name)' is missing (expected shape \(spec.shape))")
            }
            guard entry.shape == spec.shape else { throw fail(weightsURL, "tensor '\(name)' has shape \(entry.shape), expected \(spec.shape)") }
            try file.read(name, into: model.parameters.view(spec))
        }
        for spec in model.layout.tensors where !spec.name.contains(".lora_") {
            guard let entry = file.entries[peftPrefix + spec.name] else { continue }
            guard entry.shape == spec.shape else {
                throw fail(weightsURL, "tensor '\(peftPrefix + spec.name)' has shape \(entry.shape), expected \(spec.shape) (another head?)")
            }
            try file.read(peftPrefix + spec.name, into: model.parameters.view(spec))
        }
        return model
    }
}
