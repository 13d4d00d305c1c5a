import Foundation

/// A linear layer of an encoder layer that can carry a LoRA adapter.
public enum LoRATarget: String, Codable, Sendable, CaseIterable, Comparable {
    case query, key, value
    /// The attention output projection.
    case attentionOutput = "attention-output"
    /// The feed-forward layer's first linear layer (BERT's `intermediate.dense`).
    case intermediate
    /// The feed-forward layer's second linear layer (BERT's `output.dense`).
    case output

    /// Position in the per-layer adapter table.
    public var index: Int { Self.allCases.firstIndex(of: self)! }

    public static func < (a: Self, b: Self) -> Bool { a.index < b.index }

    /// The module path inside an encoder layer (`attention.self.query` for BERT).
    func module(_ family: ModelFamily) -> String {
        let m = family.layerModules
        switch self {
        case .query: return m.query
        case .key: return m.key
        case .value: return m.value
        case .attentionOutput: return m.attentionOut
        case .intermediate: return m.ffnIn
        case .output: return m.ffnOut
        }
    }

    /// Parses `query,value` or PEFT-style names (`attention.output.dense`, `q_lin`, …).
    public static func parseList(_ text: String) throws -> [LoRATarget] {
        let aliases: [String: LoRATarget] = [
            "q": .query, "k": .key, "v": .value, "o": .attentionOutput, "attention.output.dense": .attentionOutput,
            "attention-output": .attentionOutput, "attention_output": .attentionOutput, "out_lin": .attentionOutput,
            "q_lin": .query, "k_lin": .key, "v_lin": .value, "intermediate.dense": .intermediate, "lin1": .intermediate,
            "ffn-in": .intermediate, "output.dense": .output, "lin2": .output, "ffn-out": .output,
        ]
        var result: [LoRATarget] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard let t = LoRATarget(rawValue: part) ?? aliases[part] else {
                throw LoRAError("unknown LoRA target '\(part)' (choose from \(allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            if !result.contains(t) { result.append(t) }
        }
        guard !result.isEmpty else { throw LoRAError("--lora-targets names no layer") }
        return result.sorted()
    }
}

/// A LoRA problem worded for the user.
public struct LoRAError: Error, CustomStringConvertible, LocalizedError {
    public let description: String
    public init(_ description: String) { self.description = description }
    public var errorDescription: String? { description }
}

/// Low-rank adapters (Hu et al. 2021) as PEFT applies them to a linear layer:
/// `y = x·Wᵀ + b + (α/r)·(drop(x)·Aᵀ)·Bᵀ`, `A: r × in`, `B: out × r`, on the chosen
/// linear layers of every encoder layer. The base weights are frozen; the adapters and
/// the head train.
public struct LoRAConfig: Codable, Sendable, Equatable {
    public var rank: Int
    public var alpha: Float
    /// Dropout on the adapter's input (PEFT's `lora_dropout`), drawn per target.
    public var dropout: Float
    public var targets: [LoRATarget]

    public init(rank: Int, alpha: Float? = nil, dropout: Float = 0, targets: [LoRATarget] = [.query, .value]) {
        self.rank = rank
        self.alpha = alpha ?? Float(2 * rank)
        self.dropout = dropout
        self.targets = targets.sorted()
    }

    /// α / r, the factor of the adapter's output.
    public var scale: Float { alpha / Float(rank) }

    public func validate() throws {
        guard rank >= 1 else { throw LoRAError("--lora-rank must be at least 1 (got \(rank))") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("--lora-alpha must be a positive number (got \(alpha))") }
        guard (0..<1).contains(dropout) else { throw LoRAError("--lora-dropout must be in [0, 1) (got \(dropout))") }
        guard !targets.isEmpty else { throw LoRAError("LoRA needs at least one target layer") }
        guard Set(targets).count == targets.count else { throw LoRAError("LoRA targets repeat") }
    }

    /// Shapes of `A` and `B` on `target` for `config`.
    func shapes(_ target: LoRATarget, config c: BertConfig) -> (inputs: Int, outputs: Int) {
        let H = c.hiddenSize, I = c.intermediateSize
        switch target {
        case .query, .key, .value, .attentionOutput: return (H, H)
        case .intermediate: return (H, I)
        case .output: return (I, H)
        }
    }
}

/// Where one adapter lives in the flat buffer.
struct LoRASlot {
    var a = 0, b = 0, inputs = 0, outputs = 0
    /// Index of the target in the workspace's per-layer adapter activations.
    var position = 0
}

extension DropoutSite {
    static func lora(_ layer: Int, _ target: LoRATarget) -> UInt64 { (1 << 32) + 8 * UInt64(layer) + UInt64(target.index) }
}

extension BertModel {
    /// Adapter tensor names: the linear layer's Hugging Face name with `.lora_A.weight` or
    /// `.lora_B.weight`, as PEFT names them (without its `base_model.model.` prefix).
    static func loraName(_ config: BertConfig, layer l: Int, target: LoRATarget, _ matrix: String) -> String {
        config.family.layerPrefix(l) + target.module(config.family) + ".lora_\(matrix).weight"
    }

    /// The adapter names of layer `l`, `target`.
    public func loraTensorNames(layer l: Int, target: LoRATarget) -> (a: String, b: String) {
        (Self.loraName(config, layer: l, target: target, "A"), Self.loraName(config, layer: l, target: target, "B"))
    }

    /// A LoRA model on `base`'s weights: the same tensors (copied) followed by the adapters,
    /// `A` drawn as PEFT draws it (`kaiming_uniform_(a=√5)`, i.e. U(−1/√in, 1/√in)) from
    /// `seed`, `B` zero, so the model starts computing exactly what `base` computes.
    public convenience init(lora: LoRAConfig, base: BertModel, seed: UInt64 = 0) throws {
        try lora.validate()
        guard base.lora == nil else { throw LoRAError("the base model already has adapters; merge them first") }
        guard !base.inferenceOnly, base.int8 == nil else { throw LoRAError("LoRA trains on float32 weights, not an int8 model") }
        self.init(uninitialized: base.config, head: base.head, lora: lora)
        // The base tensors come first in the same order, so one copy moves them all.
        parameters.buffer.slice(0, base.layout.count).copy(from: base.parameters.buffer)
        for l in 0..<config.layers {
            for t in lora.targets {
                guard let slot = offsets.layers[l].adapters[t.index] else { continue }
                let bound = 1 / Float(slot.inputs).squareRoot()
                let key = CounterRandom.key(seed, 0x10_4A, UInt64(slot.a))
                let a = p(slot.a)
                for i in 0..<(slot.inputs * rankOrZero) { a[i] = bound * (2 * CounterRandom.uniform(key, i) - 1) }
                p(slot.b).update(repeating: 0, count: slot.outputs * rankOrZero)
            }
        }
    }

    var rankOrZero: Int { lora?.rank ?? 0 }

    /// Floats of all adapters (0 without LoRA).
    public var loraParameterCount: Int { loraTensors.reduce(0) { $0 + $1.count } }

    /// Every base tensor except the head (classifier, and the pooler when the head pools
    /// through it): what LoRA training freezes.
    public var loraFrozenTensors: Set<String> {
        let adapters = Set(loraTensors.map(\.name))
        let classifier = config.family.classifierPrefix
        return Set(layout.tensors.map(\.name).filter { name in
            if adapters.contains(name) || name.hasPrefix(classifier) { return false }
            if head.pooling == .pooler && poolerTensorNames.contains(name) { return false }
            return true
        })
    }

    /// The adapter tensors, in layout order.
    public var loraTensors: [TensorSpec] {
        guard lora != nil else { return [] }
        return layout.tensors.filter { $0.name.hasSuffix(".lora_A.weight") || $0.name.hasSuffix(".lora_B.weight") }
    }

    /// The plain model the adapters stand for: `W + (α/r)·B·A` on every target, no adapters.
    public func mergedLoRA() -> BertModel {
        guard let lora else { return self }
        let merged = BertModel(uninitialized: config, head: head)
        merged.parameters.buffer.copy(from: parameters.buffer.slice(0, merged.layout.count))
        let c = config
        for l in 0..<c.layers {
            for t in lora.targets {
                guard let slot = offsets.layers[l].adapters[t.index] else { continue }
                let name = c.family.layerPrefix(l) + t.module(c.family) + ".weight"
                let w = merged.parameters.view(name).base
                BLAS.gemm(m: slot.outputs, n: slot.inputs, k: lora.rank, alpha: lora.scale, a: p(slot.b), lda: lora.rank,
                          b: p(slot.a), ldb: slot.inputs, beta: 1, c: w, ldc: slot.inputs)
            }
        }
        return merged
    }

    // MARK: Kernels

    /// The adapter of layer `l` on `target`, if the model has one there.
    @inline(__always)
    func adapter(_ l: Int, _ target: LoRATarget) -> LoRASlot? {
        guard lora != nil else { return nil }
        return offsets.layers[l].adapters[target.index]
    }

    /// The adapter's input: `x` itself, or `drop(x)` in the workspace's scratch.
    @inline(__always)
    func loraInput(_ slot: LoRASlot, layer l: Int, target: LoRATarget, x: UnsafePointer<Float>, rows: Int,
                   workspace ws: BertWorkspace, dropout: DropoutKey?) -> UnsafePointer<Float> {
        guard let key = dropout, let p = lora?.dropout, p > 0 else { return x }
        let scratch = ws.loraInput.base
        scratch.update(from: x, count: rows * slot.inputs)
        key.mask(p, site: DropoutSite.lora(l, target)).apply(scratch, count: rows * slot.inputs)
        return UnsafePointer(scratch)
    }

    /// Adds `(α/r)·(drop(x)·Aᵀ)·Bᵀ` to `y` (row stride `ldy`) over `rows` rows and keeps
    /// `u = (α/r)·drop(x)·Aᵀ` for backward.
    func loraForward(_ target: LoRATarget, layer l: Int, x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                     workspace ws: BertWorkspace, dropout: DropoutKey?) {
        guard let slot = adapter(l, target), let lora else { return }
        let r = lora.rank
        let input = loraInput(slot, layer: l, target: target, x: x, rows: rows, workspace: ws, dropout: dropout)
        let u = ws.loraActivations(layer: l, slot: slot.position)
        BLAS.gemm(transB: true, m: rows, n: r, k: slot.inputs, alpha: lora.scale, a: input, lda: slot.inputs,
                  b: p(slot.a), ldb: slot.inputs, c: u, ldc: r)
        BLAS.gemm(transB: true, m: rows, n: slot.outputs, k: r, a: u, lda: r, b: p(slot.b), ldb: r, beta: 1, c: y, ldc: ldy)
    }

    /// Backward of `loraForward` from `dY` (row stride `ldy`): adds `dB = dYᵀ·u` and
    /// `dA = vᵀ·drop(x)` with `v = (α/r)·dY·B` (or, in norm mode, their per-example norms)
    /// and adds the adapter's share of the input gradient, `drop′(v·A)`, into `dX`.
    /// In norm mode `bookInput` tells the book where `x` will be (default: where it is).
    func loraBackward(_ target: LoRATarget, layer l: Int, x: UnsafePointer<Float>, rows: Int, dY: UnsafePointer<Float>, ldy: Int,
                      dX: UnsafeMutablePointer<Float>?, gradients: ParameterBuffer, workspace ws: BertWorkspace, dropout: DropoutKey?,
                      bookInput: GradientBook.Input? = nil) {
        guard let slot = adapter(l, target), let lora else { return }
        let r = lora.rank, g = gradients.buffer.base
        let u = ws.loraActivations(layer: l, slot: slot.position), v = ws.loraGradient.base
        if let norms = ws.exampleNorms {
            norms.linear(dY: dY, ld: ldy, x: u, rows: rows, inputs: r, outputs: slot.outputs, weight: slot.b, bias: nil)
        } else {
            BLAS.gemm(transA: true, m: slot.outputs, n: r, k: rows, a: dY, lda: ldy, b: u, ldb: r, beta: 1, c: g + slot.b, ldc: r)
        }
        BLAS.gemm(m: rows, n: r, k: slot.outputs, alpha: lora.scale, a: dY, lda: ldy, b: p(slot.b), ldb: r, c: v, ldc: r)
        let input = loraInput(slot, layer: l, target: target, x: x, rows: rows, workspace: ws, dropout: dropout)
        if let norms = ws.exampleNorms {
            // A dropped input lives in scratch the next adapter overwrites: the book copies it.
            var kept = bookInput
            if norms.keepsBook, input != x, norms.trained(slot.a, r * slot.inputs) { kept = .copied(offset: norms.book.copy(input, rows: rows, cols: slot.inputs, ld: slot.inputs)) }
            norms.linear(dY: v, ld: r, x: input, rows: rows, inputs: slot.inputs, outputs: r, weight: slot.a, bias: nil, input: kept)
        } else {
            BLAS.gemm(transA: true, m: r, n: slot.inputs, k: rows, a: v, lda: r, b: input, ldb: slot.inputs, beta: 1, c: g + slot.a, ldc: slot.inputs)
        }
        guard let dX else { return }
        if let key = dropout, lora.dropout > 0 {
            let scratch = ws.loraInput.base
            BLAS.gemm(m: rows, n: slot.inputs, k: r, a: v, lda: r, b: p(slot.a), ldb: slot.inputs, c: scratch, ldc: slot.inputs)
            key.mask(lora.dropout, site: DropoutSite.lora(l, target)).apply(scratch, count: rows * slot.inputs)
            let n = rows * slot.inputs
            Parallel.forRanges(n, minimumChunk: 1 << 14) { range in for i in range { dX[i] += scratch[i] } }
        } else {
            BLAS.gemm(m: rows, n: slot.inputs, k: r, a: v, lda: r, b: p(slot.a), ldb: slot.inputs, beta: 1, c: dX, ldc: slot.inputs)
        }
    }
}
