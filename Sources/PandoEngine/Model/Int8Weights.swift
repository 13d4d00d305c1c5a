import CPandoKernels

/// One linear layer's weights quantized to int8 for inference: symmetric, one scale per
/// output; activations are quantized per row on the fly (`pando_q8_quantize_rows`), and
/// products accumulate in 32 bits (AVX-512 VNNI where the CPU has it).
public final class Int8Linear: @unchecked Sendable {
    public let outputs: Int
    public let inputs: Int
    let packed: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>
    let sums: UnsafeMutablePointer<Int32>
    let packedCount: Int

    /// Quantizes `weight` (`outputs × inputs`, row-major, PyTorch's Linear layout).
    init(weight: UnsafePointer<Float>, outputs: Int, inputs: Int) {
        self.outputs = outputs
        self.inputs = inputs
        packedCount = Int(pando_q8_packed_size(Int32(outputs), Int32(inputs)))
        let padded = Int(pando_q8_padded_n(Int32(outputs)))
        packed = .allocate(capacity: packedCount)
        scales = .allocate(capacity: padded)
        sums = .allocate(capacity: padded)
        pando_q8_pack_weights(weight, Int32(outputs), Int32(inputs), packed, scales, sums)
    }

    deinit {
        packed.deallocate()
        scales.deallocate()
        sums.deallocate()
    }

    /// Bytes of quantized weights and per-output constants.
    public var bytes: Int { packedCount + 8 * Int(pando_q8_padded_n(Int32(outputs))) }

    /// `y = x·Wᵀ (+ bias)` for `rows` rows of `x` (row stride `inputs`) into `y` (row stride
    /// `outputs`), with `scratch` holding the quantized rows (`rows × paddedInputs` bytes) and
    /// their scales. Rows are split over `Parallel.workers`.
    func apply(_ x: UnsafePointer<Float>, rows: Int, bias: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>,
               scratch: Int8Scratch) {
        let box = UnsafeSendableBox((x, bias, y, scratch.activations, scratch.rowScales))
        let k = Int32(inputs), n = Int32(outputs)
        Parallel.forRanges(rows, minimumChunk: 32) { range in
            let (x, bias, y, q, rs) = box.value
            let m0 = Int32(range.lowerBound), m1 = Int32(range.upperBound)
            pando_q8_quantize_rows(x, k, m0, m1, k, q, rs)
            pando_q8_gemm(q, rs, m0, m1, k, self.packed, self.scales, self.sums, bias, n, y, n)
        }
    }

    /// Which kernel runs on this CPU (`avx512-vnni` or `portable`).
    public static var kernel: String { String(cString: pando_q8_kernel_name()) }
}

/// Quantized activation rows for `Int8Linear.apply`, sized for a workspace.
final class Int8Scratch: @unchecked Sendable {
    let activations: UnsafeMutablePointer<UInt8>
    let rowScales: UnsafeMutablePointer<Float>
    init(rows: Int, widestInput: Int) {
        activations = .allocate(capacity: rows * Int(pando_q8_padded_k(Int32(widestInput))))
        rowScales = .allocate(capacity: rows)
    }
    deinit {
        activations.deallocate()
        rowScales.deallocate()
    }
}

/// The encoder's four linear layers per block in int8; embeddings, LayerNorms,
/// attention products, the pooler and the head stay in float32.
public final class Int8Encoder: @unchecked Sendable {
    struct Layer {
        let qkv: Int8Linear, attentionOut: Int8Linear, ffnIn: Int8Linear, ffnOut: Int8Linear
    }
    let layers: [Layer]

    init(_ model: BertModel) {
        let H = model.config.hiddenSize, I = model.config.intermediateSize
        layers = model.offsets.layers.map { o in
            Layer(qkv: Int8Linear(weight: model.p(o.qkvWeight), outputs: 3 * H, inputs: H),
                  attentionOut: Int8Linear(weight: model.p(o.attentionOutWeight), outputs: H, inputs: H),
                  ffnIn: Int8Linear(weight: model.p(o.ffnInWeight), outputs: I, inputs: H),
                  ffnOut: Int8Linear(weight: model.p(o.ffnOutWeight), outputs: H, inputs: I))
        }
    }

    /// Bytes of all quantized layers.
    public var bytes: Int { layers.reduce(0) { $0 + $1.qkv.bytes + $1.attentionOut.bytes + $1.ffnIn.bytes + $1.ffnOut.bytes } }
}

extension BertModel {
    /// Quantizes the encoder's linear layers to int8 for inference (a snapshot of the
    /// current weights: quantize again after changing them). Inference workspaces made
    /// afterwards use it; training never does.
    @discardableResult
    public func quantizeForInference() -> Int8Encoder {
        let encoder = Int8Encoder(self)
        int8 = encoder
        return encoder
    }

    /// Back to float32 inference.
    public func dropQuantization() { int8 = nil }
}
