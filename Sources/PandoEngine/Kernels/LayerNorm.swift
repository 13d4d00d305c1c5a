import CPandoKernels
import Foundation

/// Layer normalisation over the last dimension, `y = x̂·γ + β` with
/// `x̂ = (x − mean) / √(var + ε)`. The forward pass keeps `x̂` and `1/σ` per
/// row for the backward pass.
public enum LayerNormKernel {
    /// With `adding: (bias, residual)`, normalises input + bias + residual without writing that
    /// sum out: an encoder layer's residual connection when it has no dropout.
    public static func forward(
        input: UnsafePointer<Float>, adding: (bias: UnsafePointer<Float>, residual: UnsafePointer<Float>)? = nil,
        rows: Int, cols: Int,
        gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float,
        normalized: UnsafeMutablePointer<Float>?, inverseStd: UnsafeMutablePointer<Float>?,
        output: UnsafeMutablePointer<Float>
    ) {
        Parallel.forRanges(rows, minimumChunk: 64) { range in
            let offset = range.lowerBound * cols
            pando_layer_norm_rows(
                input + offset, adding?.bias, adding.map { $0.residual + offset }, Int32(range.count), Int32(cols), gamma, beta, eps,
                normalized.map { $0 + offset }, inverseStd.map { $0 + range.lowerBound }, output + offset)
        }
    }

    /// Writes `dInput` (overwriting) and adds to `dGamma` and `dBeta`.
    /// `scratch` needs `2 · cols · Parallel.workers` floats for per-thread sums.
    public static func backward(
        dOutput: UnsafePointer<Float>, normalized: UnsafePointer<Float>, inverseStd: UnsafePointer<Float>,
        gamma: UnsafePointer<Float>, rows: Int, cols: Int,
        dInput: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>,
        scratch: FloatBuffer
    ) {
        let chunks = min(Parallel.workers, max(1, rows / 64))
        precondition(scratch.count >= 2 * cols * chunks, "layer norm scratch too small")
        scratch.slice(0, 2 * cols * chunks).fill(0)
        Parallel.forEach(chunks) { chunk in
            let lo = rows * chunk / chunks, hi = rows * (chunk + 1) / chunks
            let dg = scratch.base + 2 * cols * chunk
            pando_layer_norm_backward_rows(
                dOutput + lo * cols, normalized + lo * cols, inverseStd + lo, gamma, Int32(hi - lo), Int32(cols),
                dInput + lo * cols, dg, dg + cols)
        }
        for chunk in 0..<chunks {
            let dg = scratch.base + 2 * cols * chunk
            for c in 0..<cols {
                dGamma[c] += dg[c]
                dBeta[c] += dg[cols + c]
            }
        }
    }
}
