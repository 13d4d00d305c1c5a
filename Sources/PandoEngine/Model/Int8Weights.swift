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

    /// Buffers for an `outputs × inputs` layer in the kernel's packed layout.
    private init(outputs: Int, inputs: Int) {
        self.outputs = outputs
        self.inputs = inputs
        packedCount = Int(pando_q8_packed_size(Int32(outputs), Int32(inputs)))
        let padded = Int(pando_q8_padded_n(Int32(outputs)))
        packed = .allocate(capacity: packedCount)
        scales = .allocate(capacity: padded)
        sums = .allocate(capacity: padded)
        scales.initialize(repeating: 1, count: padded)
    }

    /// Quantizes `weight` (`outputs × inputs`, row-major, PyTorch's Linear layout).
    convenience init(weight: UnsafePointer<Float>, outputs: Int, inputs: Int) {
        self.init(outputs: outputs, inputs: inputs)
        pando_q8_pack_weights(weight, Int32(outputs), Int32(inputs), packed, scales, sums)
    }

    /// Already quantized weights (row-major int8 `outputs × inputs` and one scale per output,
    /// as a saved int8 checkpoint holds them): packed, never expanded to float32.
    convenience init(quantized: UnsafePointer<Int8>, scales given: UnsafePointer<Float>, outputs: Int, inputs: Int) {
        self.init(outputs: outputs, inputs: inputs)
        scales.update(from: given, count: outputs)
        pando_q8_pack_int8(quantized, Int32(outputs), Int32(inputs), packed, sums)
    }

    /// Rows `rows` of the weights, row-major int8, with their scales (for saving).
    func rowMajor(rows: Range<Int>) -> (values: [Int8], scales: [Float]) {
        var all = [Int8](repeating: 0, count: outputs * inputs)
        all.withUnsafeMutableBufferPointer { pando_q8_unpack(packed, Int32(outputs), Int32(inputs), $0.baseAddress!) }
        return (Array(all[rows.lowerBound * inputs..<rows.upperBound * inputs]), Array(UnsafeBufferPointer(start: scales + rows.lowerBound, count: rows.count)))
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

/// A word-embedding table in int8: symmetric, one scale per row (token); rows are
/// dequantized as they are gathered. A quarter of the float32 table, which is half of
/// MiniLM's parameters.
public final class Int8Embedding: @unchecked Sendable {
    public let rows: Int
    public let width: Int
    let values: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>

    init(table: UnsafePointer<Float>, rows: Int, width: Int) {
        self.rows = rows
        self.width = width
        values = .allocate(capacity: rows * width)
        scales = .allocate(capacity: rows)
        for r in 0..<rows {
            let row = table + r * width
            var m: Float = 0
            for j in 0..<width { m = max(m, abs(row[j])) }
            let s: Float = m > 0 ? m / 127 : 1
            scales[r] = s
            for j in 0..<width { values[r * width + j] = Int8(clamping: Int((row[j] / s).rounded(.toNearestOrEven))) }
        }
    }

    init(quantized: UnsafePointer<Int8>, scales given: UnsafePointer<Float>, rows: Int, width: Int) {
        self.rows = rows
        self.width = width
        values = .allocate(capacity: rows * width)
        values.update(from: quantized, count: rows * width)
        scales = .allocate(capacity: rows)
        scales.update(from: given, count: rows)
    }

    deinit {
        values.deallocate()
        scales.deallocate()
    }

    public var bytes: Int { rows * width + 4 * rows }

    /// Row `r`, dequantized, added to `out` (which holds `width` floats).
    @inline(__always) func add(row r: Int, to out: UnsafeMutablePointer<Float>) {
        let q = values + r * width, s = scales[r]
        for j in 0..<width { out[j] += Float(q[j]) * s }
    }
}

/// The encoder's four linear layers per block, and the word embeddings, in int8;
/// position and token-type embeddings, LayerNorms, attention products, the pooler and the
/// head stay in float32.
public final class Int8Encoder: @unchecked Sendable {
    struct Layer {
        let qkv: Int8Linear, attentionOut: Int8Linear, ffnIn: Int8Linear, ffnOut: Int8Linear
    }
    let layers: [Layer]
    let embeddings: Int8Embedding

    init(_ model: BertModel) {
        let H = model.config.hiddenSize, I = model.config.intermediateSize
        layers = model.offsets.layers.map { o in
            Layer(qkv: Int8Linear(weight: model.p(o.qkvWeight), outputs: 3 * H, inputs: H),
                  attentionOut: Int8Linear(weight: model.p(o.attentionOutWeight), outputs: H, inputs: H),
                  ffnIn: Int8Linear(weight: model.p(o.ffnInWeight), outputs: I, inputs: H),
                  ffnOut: Int8Linear(weight: model.p(o.ffnOutWeight), outputs: H, inputs: I))
        }
        embeddings = Int8Embedding(table: model.p(model.offsets.word), rows: model.config.vocabSize, width: H)
    }

    init(layers: [Layer], embeddings: Int8Embedding) {
        self.layers = layers
        self.embeddings = embeddings
    }

    /// Bytes of all quantized tensors.
    public var bytes: Int {
        embeddings.bytes + layers.reduce(0) { $0 + $1.qkv.bytes + $1.attentionOut.bytes + $1.ffnIn.bytes + $1.ffnOut.bytes }
    }
}

extension BertModel {
    /// Quantizes the encoder's linear layers to int8 for inference (a snapshot of the
    /// current weights: quantize again after changing them). Inference workspaces made
    /// afterwards use it; training never does.
    @discardableResult
    public func quantizeForInference() -> Int8Encoder {
        if inferenceOnly, let int8 { return int8 }
        let encoder = Int8Encoder(self)
        int8 = encoder
        return encoder
    }

    /// Back to float32 inference.
    public func dropQuantization() {
        precondition(!inferenceOnly, "a model loaded from an int8 checkpoint has no float32 weights to go back to")
        int8 = nil
    }
}
