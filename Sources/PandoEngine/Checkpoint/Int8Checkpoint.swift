import CPandoKernels
import Foundation

/// Saved int8 models: what `pando quantize` writes and `BertModel.load` reads.
///
/// The folder is a Hugging Face folder whose weights file is `model-int8.safetensors`
/// instead of `model.safetensors` (so no tool mistakes it for float weights): the
/// encoder's linear weights and the word embeddings as I8 tensors under their usual names,
/// each with a F32 `<name>_scale` tensor (one scale per output row, symmetric), and every
/// other tensor as F32. Loading packs the int8 weights straight into the kernel's layout;
/// their float32 slots in the parameter buffer are never written, so they cost no memory.
public enum Int8Checkpoint {
    public static let weightsFile = "model-int8.safetensors"
    static let formatKey = "pando_format", formatValue = "int8-v1"

    /// Whether `folder` holds an int8 checkpoint.
    public static func isInt8(_ folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent(weightsFile).path)
            && !FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path)
    }

    /// The names of the quantized tensors of layer `l`, in the order of the fused rows.
    static func layerNames(_ l: Int, _ family: ModelFamily) -> (qkv: [String], attentionOut: String, ffnIn: String, ffnOut: String) {
        let p = family.layerPrefix(l), m = family.layerModules
        return ([p + m.query + ".weight", p + m.key + ".weight", p + m.value + ".weight"],
                p + m.attentionOut + ".weight", p + m.ffnIn + ".weight", p + m.ffnOut + ".weight")
    }
    static func wordEmbeddings(_ family: ModelFamily) -> String { family.embeddingsPrefix + "word_embeddings.weight" }

    static func quantizedNames(layers: Int, family: ModelFamily) -> Set<String> {
        var names: Set<String> = [wordEmbeddings(family)]
        for l in 0..<layers {
            let n = layerNames(l, family)
            names.formUnion(n.qkv + [n.attentionOut, n.ffnIn, n.ffnOut])
        }
        return names
    }
}

extension BertModel {
    /// Writes this model as an int8 checkpoint (see ``Int8Checkpoint``): `config.json`, the
    /// weights file and `files` (tokenizer, `pando-training.json`) beside them.
    public func saveInt8(to folder: URL, copying files: [URL] = []) throws {
        let encoder = quantizeForInference()
        // config.json and the copied files exactly as a float save writes them; the float weights
        // file goes only once the int8 one is in place, so a failure never leaves no weights.
        try save(to: folder, copying: files)
        let H = config.hiddenSize, I = config.intermediateSize
        var keep: [[Int8]] = [], keepScales: [[Float]] = []
        var tensors: [(name: String, shape: [Int], values: Int, scales: Int)] = []
        func add(_ name: String, _ shape: [Int], _ part: (values: [Int8], scales: [Float])) {
            keep.append(part.values)
            keepScales.append(part.scales)
            tensors.append((name, shape, keep.count - 1, keepScales.count - 1))
        }
        let e = encoder.embeddings
        add(Int8Checkpoint.wordEmbeddings(config.family), [e.rows, e.width],
            (Array(UnsafeBufferPointer(start: e.values, count: e.rows * e.width)), Array(UnsafeBufferPointer(start: e.scales, count: e.rows))))
        for (l, layer) in encoder.layers.enumerated() {
            let n = Int8Checkpoint.layerNames(l, config.family)
            for (i, name) in n.qkv.enumerated() { add(name, [H, H], layer.qkv.rowMajor(rows: i * H..<(i + 1) * H)) }
            add(n.attentionOut, [H, H], layer.attentionOut.rowMajor(rows: 0..<H))
            add(n.ffnIn, [I, H], layer.ffnIn.rowMajor(rows: 0..<I))
            add(n.ffnOut, [H, I], layer.ffnOut.rowMajor(rows: 0..<H))
        }
        let quantized = Set(tensors.map(\.name))
        try withExtendedLifetime((keep, keepScales)) {
            var out: [SafeTensors.Tensor] = []
            for t in tensors {
                keep[t.values].withUnsafeBytes { out.append(SafeTensors.Tensor(name: t.name, shape: t.shape, dtype: .i8, bytes: UnsafeRawBufferPointer($0))) }
                keepScales[t.scales].withUnsafeBytes {
                    out.append(SafeTensors.Tensor(name: t.name + "_scale", shape: [t.shape[0]], dtype: .f32, bytes: UnsafeRawBufferPointer($0)))
                }
            }
            for spec in layout.tensors where !quantized.contains(spec.name) {
                out.append(SafeTensors.Tensor(name: spec.name, shape: spec.shape, values: parameters.view(spec)))
            }
            try SafeTensors.write(out, metadata: ["format": "pt", Int8Checkpoint.formatKey: Int8Checkpoint.formatValue],
                                  to: folder.appendingPathComponent(Int8Checkpoint.weightsFile))
        }
        try FileManager.default.removeItem(at: folder.appendingPathComponent("model.safetensors"))
    }

    /// Loads an int8 checkpoint: float tensors into the buffer, int8 ones packed for the kernel.
    static func loadInt8(from folder: URL, config: BertConfig, head: ClassifierHead, seed: UInt64) throws -> (BertModel, LoadReport) {
        let url = folder.appendingPathComponent(Int8Checkpoint.weightsFile)
        let file = try SafeTensors.File(url: url)
        guard file.metadata[Int8Checkpoint.formatKey] == Int8Checkpoint.formatValue else {
            throw CheckpointError(path: url.path, reason: "not a Pando int8 checkpoint (metadata \(Int8Checkpoint.formatKey) is \(file.metadata[Int8Checkpoint.formatKey] ?? "absent"), expected \(Int8Checkpoint.formatValue))")
        }
        let model = BertModel(uninitialized: config, head: head)
        var report = LoadReport()
        report.storedTypes = ["I8", "F32"]
        let quantized = Int8Checkpoint.quantizedNames(layers: config.layers, family: config.family)
        var used = Set<String>()
        for spec in model.layout.tensors where !quantized.contains(spec.name) {
            guard let entry = file.entries[spec.name] else {
                if spec.name.hasPrefix(config.family.classifierPrefix) || spec.name.hasPrefix(config.family.poolerPrefix) {
                    model.initialize(spec, seed: seed)
                    report.initialized.append(spec.name)
                    continue
                }
                throw CheckpointError(path: url.path, reason: "tensor '\(spec.name)' is missing (expected shape \(spec.shape))")
            }
            guard entry.shape == spec.shape else {
                // Another head than the one asked for (as the float loader does): a fresh one.
                if spec.name.hasPrefix(config.family.classifierPrefix) {
                    model.initialize(spec, seed: seed)
                    report.initialized.append(spec.name)
                    used.insert(spec.name)
                    continue
                }
                throw CheckpointError(path: url.path, reason: "tensor '\(spec.name)' has shape \(entry.shape), expected \(spec.shape) from config.json")
            }
            try file.read(spec.name, into: model.parameters.view(spec))
            used.insert(spec.name)
        }
        let H = config.hiddenSize, I = config.intermediateSize
        /// Packs `names` (stacked as consecutive rows) into one Int8Linear.
        func linear(_ names: [String], rows: Int, inputs: Int) throws -> Int8Linear {
            var values = [Int8](), scales = [Float]()
            for name in names {
                try file.withBytes(name, dtype: .i8, count: rows * inputs) { values.append(contentsOf: $0.bindMemory(to: Int8.self)) }
                try file.withBytes(name + "_scale", dtype: .f32, count: rows) { scales.append(contentsOf: $0.bindMemory(to: Float.self)) }
                used.formUnion([name, name + "_scale"])
            }
            return values.withUnsafeBufferPointer { v in
                scales.withUnsafeBufferPointer { s in
                    Int8Linear(quantized: v.baseAddress!, scales: s.baseAddress!, outputs: rows * names.count, inputs: inputs)
                }
            }
        }
        var layers: [Int8Encoder.Layer] = []
        for l in 0..<config.layers {
            let n = Int8Checkpoint.layerNames(l, config.family)
            layers.append(Int8Encoder.Layer(qkv: try linear(n.qkv, rows: H, inputs: H),
                                            attentionOut: try linear([n.attentionOut], rows: H, inputs: H),
                                            ffnIn: try linear([n.ffnIn], rows: I, inputs: H),
                                            ffnOut: try linear([n.ffnOut], rows: H, inputs: I)))
        }
        let V = config.vocabSize, name = Int8Checkpoint.wordEmbeddings(config.family)
        let embeddings = try file.withBytes(name, dtype: .i8, count: V * H) { values in
            try file.withBytes(name + "_scale", dtype: .f32, count: V) { scales in
                Int8Embedding(quantized: values.bindMemory(to: Int8.self).baseAddress!, scales: scales.bindMemory(to: Float.self).baseAddress!,
                              rows: V, width: H)
            }
        }
        used.formUnion([name, name + "_scale"])
        model.int8 = Int8Encoder(layers: layers, embeddings: embeddings)
        model.inferenceOnly = true
        report.unused = file.entries.keys.filter { !used.contains($0) }.sorted()
        return (model, report)
    }
}
