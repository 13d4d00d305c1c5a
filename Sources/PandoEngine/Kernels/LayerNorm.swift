import Foundation

/// Layer normalisation over the last dimension, `y = x̂·γ + β` with
/// `x̂ = (x − mean) / √(var + ε)`. The forward pass keeps `x̂` and `1/σ` per
/// row for the backward pass.
public enum LayerNormKernel {
    public static func forward(
        input: UnsafePointer<Float>, rows: Int, cols: Int,
        gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float,
        normalized: UnsafeMutablePointer<Float>?, inverseStd: UnsafeMutablePointer<Float>?,
        output: UnsafeMutablePointer<Float>
    ) {
        let inv = 1 / Float(cols)
        Parallel.forRanges(rows, minimumChunk: 64) { range in
            for r in range {
                let x = input + r * cols
                var sum: Float = 0
                for c in 0..<cols { sum += x[c] }
                let mean = sum * inv
                var sq: Float = 0
                for c in 0..<cols { let d = x[c] - mean; sq += d * d }
                let rstd = 1 / (sq * inv + eps).squareRoot()
                inverseStd?[r] = rstd
                let y = output + r * cols
                if let normalized {
                    let n = normalized + r * cols
                    for c in 0..<cols {
                        let h = (x[c] - mean) * rstd
                        n[c] = h
                        y[c] = h * gamma[c] + beta[c]
                    }
                } else {
                    for c in 0..<cols { y[c] = (x[c] - mean) * rstd * gamma[c] + beta[c] }
                }
            }
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
        let inv = 1 / Float(cols)
        Parallel.forEach(chunks) { chunk in
            let lo = rows * chunk / chunks, hi = rows * (chunk + 1) / chunks
            let dg = scratch.base + 2 * cols * chunk
            let db = dg + cols
            for r in lo..<hi {
                let dy = dOutput + r * cols
                let xh = normalized + r * cols
                var meanD: Float = 0, meanDX: Float = 0
                for c in 0..<cols {
                    let d = dy[c] * gamma[c]
                    meanD += d
                    meanDX += d * xh[c]
                    dg[c] += dy[c] * xh[c]
                    db[c] += dy[c]
                }
                meanD *= inv
                meanDX *= inv
                let rstd = inverseStd[r]
                let dx = dInput + r * cols
                for c in 0..<cols {
                    dx[c] = rstd * (dy[c] * gamma[c] - meanD - xh[c] * meanDX)
                }
            }
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
