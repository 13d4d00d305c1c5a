import CPandoKernels
import Dispatch
import Foundation

/// Where each sequence of a packed batch lives: tokens of sequence `b` are
/// rows `offsets[b] ..< offsets[b] + lengths[b]` of every activation matrix,
/// and its attention probabilities for head `h` start at
/// `probabilityOffsets[b] + h · lengths[b]²`.
///
/// Packing means padded positions never enter a GEMM: a batch of ragged
/// sequences costs what its real tokens cost.
public struct SequenceTable: Sendable {
    public private(set) var offsets: [Int] = []
    public private(set) var lengths: [Int] = []
    public private(set) var probabilityOffsets: [Int] = []
    public private(set) var tokenCount = 0
    public private(set) var probabilityCount = 0

    public init() {}

    /// Reuses storage; allocates only when a larger batch than before arrives.
    public mutating func reset(lengths newLengths: [Int], heads: Int) {
        offsets.removeAll(keepingCapacity: true)
        lengths.removeAll(keepingCapacity: true)
        probabilityOffsets.removeAll(keepingCapacity: true)
        tokenCount = 0
        probabilityCount = 0
        for length in newLengths {
            offsets.append(tokenCount)
            lengths.append(length)
            probabilityOffsets.append(probabilityCount)
            tokenCount += length
            probabilityCount += heads * length * length
        }
    }

    public var count: Int { lengths.count }
}

/// Multi-head scaled dot-product self-attention over a packed batch, one
/// (sequence, head) pair per task. Q, K and V are column blocks of one
/// `[tokens × 3·hidden]` matrix, addressed in place through GEMM strides.
public enum AttentionKernel {
    /// Tests set this false to run the unfused path (two GEMMs around a softmax) that
    /// training with dropout uses; the fused kernel is checked against it.
    nonisolated(unsafe) public static var useFusedKernel = true

    /// Computes `probabilities` (scratch: backward recomputes them) and `context`.
    /// `dropped` receives the dropped-out probabilities when dropout is active.
    public static func forward(
        qkv: UnsafePointer<Float>, hidden: Int, heads: Int, table: SequenceTable,
        probabilities: UnsafeMutablePointer<Float>, dropped: UnsafeMutablePointer<Float>,
        context: UnsafeMutablePointer<Float>, dropout: DropoutMask
    ) {
        let d = hidden / heads
        let ld = 3 * hidden
        let scale = 1 / Float(d).squareRoot()
        let offsets = table.offsets, lengths = table.lengths, probOffsets = table.probabilityOffsets
        let pairs = table.count * heads
        let q = UnsafeSendableBox((qkv, probabilities, dropped, context))
        let fused = !dropout.isActive && useFusedKernel
        DispatchQueue.concurrentPerform(iterations: pairs) { pair in
                let (qkv, probabilities, dropped, context) = q.value
                let b = pair / heads, h = pair % heads
                let L = lengths[b]
                let rows = qkv + offsets[b] * ld
                let Q = rows + h * d, K = rows + hidden + h * d, V = rows + 2 * hidden + h * d
                // Without dropout nothing needs the probabilities (backward recomputes them):
                // scores, softmax and context in one pass over L1-sized blocks.
                if fused, pando_attention(Q, K, V, Int32(ld), Int32(L), Int32(d), scale,
                                          context + offsets[b] * hidden + h * d, Int32(hidden)) != 0 { return }
                let pIndex = probOffsets[b] + h * L * L
                let P = probabilities + pIndex
                BLAS.serial(transB: true, m: L, n: L, k: d, alpha: scale, a: Q, lda: ld, b: K, ldb: ld, c: P, ldc: L)
                softmaxRows(P, rows: L, cols: L)
                var use = UnsafePointer(P)
                if dropout.isActive {
                    let D = dropped + pIndex
                    for i in 0..<(L * L) { D[i] = P[i] * dropout.factor(pIndex + i) }
                    use = UnsafePointer(D)
                }
                BLAS.serial(m: L, n: d, k: L, a: use, lda: L, b: V, ldb: ld,
                          c: context + offsets[b] * hidden + h * d, ldc: hidden)
        }
    }

    /// Writes `dQKV` (overwriting) from `dContext`. `probabilities`,
    /// `dProbabilities` and `dropped` are scratch of the probabilities' size:
    /// the softmax is recomputed here from Q and K (one L×L×d product per
    /// head), so training keeps no per-layer probabilities — the largest
    /// activation of a layer at usual lengths.
    public static func backward(
        qkv: UnsafePointer<Float>, hidden: Int, heads: Int, table: SequenceTable,
        probabilities: UnsafeMutablePointer<Float>, dropped: UnsafeMutablePointer<Float>,
        dContext: UnsafePointer<Float>, dProbabilities: UnsafeMutablePointer<Float>,
        dQKV: UnsafeMutablePointer<Float>, dropout: DropoutMask
    ) {
        let d = hidden / heads
        let ld = 3 * hidden
        let scale = 1 / Float(d).squareRoot()
        let offsets = table.offsets, lengths = table.lengths, probOffsets = table.probabilityOffsets
        let pairs = table.count * heads
        let q = UnsafeSendableBox((qkv, probabilities, dropped, dContext, dProbabilities, dQKV))
        DispatchQueue.concurrentPerform(iterations: pairs) { pair in
                let (qkv, probabilities, dropped, dContext, dProbabilities, dQKV) = q.value
                let b = pair / heads, h = pair % heads
                let L = lengths[b]
                let rows = qkv + offsets[b] * ld
                let Q = rows + h * d, K = rows + hidden + h * d, V = rows + 2 * hidden + h * d
                let dRows = dQKV + offsets[b] * ld
                let dQ = dRows + h * d, dK = dRows + hidden + h * d, dV = dRows + 2 * hidden + h * d
                let dC = dContext + offsets[b] * hidden + h * d
                let pIndex = probOffsets[b] + h * L * L
                let P = probabilities + pIndex
                let dP = dProbabilities + pIndex
                BLAS.serial(transB: true, m: L, n: L, k: d, alpha: scale, a: Q, lda: ld, b: K, ldb: ld, c: P, ldc: L)
                softmaxRows(P, rows: L, cols: L)
                var used = UnsafePointer(P)
                if dropout.isActive {
                    let D = dropped + pIndex
                    for i in 0..<(L * L) { D[i] = P[i] * dropout.factor(pIndex + i) }
                    used = UnsafePointer(D)
                }
                // dV = P′ᵀ·dC ; dP′ = dC·Vᵀ
                BLAS.serial(transA: true, m: L, n: d, k: L, a: used, lda: L, b: dC, ldb: hidden, c: dV, ldc: ld)
                BLAS.serial(transB: true, m: L, n: L, k: d, a: dC, lda: hidden, b: V, ldb: ld, c: dP, ldc: L)
                // Through dropout, then the softmax Jacobian: dS = P ⊙ (dP − Σ_j dP·P).
                if dropout.isActive {
                    for i in 0..<(L * L) { dP[i] *= dropout.factor(pIndex + i) }
                }
                pando_softmax_backward_rows(dP, P, Int32(L), Int32(L), Int32(L))
                // S = scale·Q·Kᵀ ⇒ dQ = scale·dS·K ; dK = scale·dSᵀ·Q
                BLAS.serial(m: L, n: d, k: L, alpha: scale, a: dP, lda: L, b: K, ldb: ld, c: dQ, ldc: ld)
                BLAS.serial(transA: true, m: L, n: d, k: L, alpha: scale, a: dP, lda: L, b: Q, ldb: ld, c: dK, ldc: ld)
        }
    }

    /// Numerically stable softmax of each row, in place.
    @inline(__always)
    static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        pando_softmax_rows(x, Int32(rows), Int32(cols), Int32(cols))
    }
}
