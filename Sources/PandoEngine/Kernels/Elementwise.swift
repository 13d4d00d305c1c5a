import CPandoKernels
import Foundation

/// Dropout whose mask is a pure function of (key, element index): the
/// backward pass regenerates it rather than storing it.
public struct DropoutMask: Sendable {
    public let probability: Float
    public let key: UInt64

    @inlinable public var isActive: Bool { probability > 0 }
    @inlinable public var scale: Float { 1 / (1 - probability) }

    /// The factor for element `index`: `0` (dropped) or `1/(1−p)`.
    @inline(__always)
    public func factor(_ index: Int) -> Float {
        CounterRandom.uniform(key, index) < probability ? 0 : scale
    }

    /// `x[i] *= factor(base + i)` for `i` in `0..<count`; the same call on a
    /// gradient is the backward pass.
    public func apply(_ x: UnsafeMutablePointer<Float>, count: Int, base: Int = 0) {
        guard isActive else { return }
        Parallel.forRanges(count, minimumChunk: 1 << 14) { range in
            for i in range { x[i] *= factor(base + i) }
        }
    }
}

/// Element-wise kernels, each one pass over memory, threaded by rows.
public enum Elementwise {
    /// Which build of the C element-wise kernels this CPU runs: `avx512`, `avx2` or `portable`.
    public static var kernels: String { String(cString: pando_vector_kernel_name()) }

    /// Standard normals from 32-bit uniforms by Box–Muller in double precision (`pando_box_muller`):
    /// pair k of `bits` gives `out[2k]` (r·cos θ) and `out[2k + 1]` (r·sin θ); reads ⌈count/2⌉
    /// pairs, one thread (callers split the work by chunks of their stream).
    public static func boxMuller(_ bits: UnsafePointer<UInt32>, count: Int, into out: UnsafeMutablePointer<Float>) {
        pando_box_muller(bits, count, out)
    }

    /// `y[r, c] = bias[c]` for every row: the starting value for a GEMM with β = 1.
    public static func broadcastRows(_ bias: UnsafePointer<Float>, rows: Int, cols: Int, into y: UnsafeMutablePointer<Float>) {
        Parallel.forRanges(rows, minimumChunk: 256) { range in
            for r in range { (y + r * cols).update(from: bias, count: cols) }
        }
    }

    /// `x[r, c] = dropout(x[r, c] + bias[c]) + residual[r, c]`: the input of
    /// the post-layer LayerNorm in a BERT block.
    public static func biasDropoutResidual(
        _ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, residual: UnsafePointer<Float>,
        rows: Int, cols: Int, dropout: DropoutMask
    ) {
        Parallel.forRanges(rows, minimumChunk: 64) { range in
            for r in range {
                let row = x + r * cols, res = residual + r * cols
                if dropout.isActive {
                    for c in 0..<cols { row[c] = (row[c] + bias[c]) * dropout.factor(r * cols + c) + res[c] }
                } else {
                    for c in 0..<cols { row[c] = row[c] + bias[c] + res[c] }
                }
            }
        }
    }

    /// `out = activation(pre)`, row-parallel.
    public static func activation(
        _ pre: UnsafePointer<Float>, rows: Int, cols: Int, activation: BertConfig.Activation,
        output: UnsafeMutablePointer<Float>
    ) {
        Parallel.forRanges(rows, minimumChunk: 16) { range in
            let p = pre + range.lowerBound * cols, o = output + range.lowerBound * cols, n = range.count * cols
            if activation == .gelu {
                pando_gelu(p, n, o)
                return
            }
            for i in 0..<n { o[i] = Activation.value(p[i], activation) }
        }
    }

    /// `pre += bias` in place, then `out = activation(pre)` (a head's dense layer; the encoder's
    /// feed-forward layer takes its bias in the GEMM and calls `activation` alone).
    public static func biasActivation(
        _ pre: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int,
        activation: BertConfig.Activation, output: UnsafeMutablePointer<Float>
    ) {
        Parallel.forRanges(rows, minimumChunk: 16) { range in
            for r in range {
                let row = pre + r * cols
                for c in 0..<cols { row[c] += bias[c] }
            }
        }
        Elementwise.activation(pre, rows: rows, cols: cols, activation: activation, output: output)
    }

    /// `out = activation(pre)`.
    public static func activation(
        _ pre: UnsafePointer<Float>, count: Int, activation: BertConfig.Activation, output: UnsafeMutablePointer<Float>
    ) {
        Parallel.forRanges(count, minimumChunk: 1 << 14) { range in
            if activation == .gelu {
                pando_gelu(pre + range.lowerBound, range.count, output + range.lowerBound)
                return
            }
            for i in range { output[i] = Activation.value(pre[i], activation) }
        }
    }

    /// `grad *= activation′(pre)` in place.
    public static func activationBackward(
        _ grad: UnsafeMutablePointer<Float>, pre: UnsafePointer<Float>, count: Int, activation: BertConfig.Activation
    ) {
        Parallel.forRanges(count, minimumChunk: 1 << 14) { range in
            if activation == .gelu {
                pando_gelu_backward(grad + range.lowerBound, pre + range.lowerBound, range.count)
                return
            }
            for i in range { grad[i] *= Activation.derivative(pre[i], activation) }
        }
    }

    /// `x[i] = tanh(x[i] + bias[c])`, the BERT pooler's activation.
    public static func biasTanh(_ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let row = x + r * cols
            for c in 0..<cols { row[c] = Foundation.tanh(row[c] + bias[c]) }
        }
    }

    /// Sum of squares, accumulated in Double and threaded.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        let chunks = min(Parallel.workers, 64, max(1, count / (1 << 16)))
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: 64) { parts in
        let parts = UnsafeSendableBox(parts.baseAddress!)
        Parallel.forEach(chunks) { chunk in
            let lo = count * chunk / chunks, hi = count * (chunk + 1) / chunks
            var acc: Float = 0, total: Double = 0
            var i = lo
            while i < hi {
                let end = min(hi, i + 4096)
                acc = 0
                while i < end { acc += x[i] * x[i]; i += 1 }
                total += Double(acc)
            }
            parts.value[chunk] = total
        }
        var total = 0.0
        for c in 0..<chunks { total += parts.value[c] }
        return total
        }
    }

    /// `x *= s`.
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by s: Float) {
        Parallel.forRanges(count, minimumChunk: 1 << 16) { range in
            for i in range { x[i] *= s }
        }
    }
}

/// The activations BERT configs name.
public enum Activation {
    @inline(__always)
    static func value(_ x: Float, _ kind: BertConfig.Activation) -> Float {
        switch kind {
        case .gelu: return 0.5 * x * (1 + erff(x * 0.707_106_77))
        case .geluTanh:
            let u = 0.797_884_56 * (x + 0.044_715 * x * x * x)
            return 0.5 * x * (1 + tanhf(u))
        case .relu: return x > 0 ? x : 0
        }
    }

    @inline(__always)
    static func derivative(_ x: Float, _ kind: BertConfig.Activation) -> Float {
        switch kind {
        case .gelu:
            // Φ(x) + x·φ(x)
            return 0.5 * (1 + erff(x * 0.707_106_77)) + x * 0.398_942_3 * expf(-0.5 * x * x)
        case .geluTanh:
            let x2 = x * x
            let u = 0.797_884_56 * (x + 0.044_715 * x2 * x)
            let t = tanhf(u)
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.797_884_56 * (1 + 3 * 0.044_715 * x2)
        case .relu: return x > 0 ? 1 : 0
        }
    }
}
