import CPandoKernels
import Dispatch

/// Row-major single-precision GEMM: Pando's AVX-512 kernel for the large products on CPUs
/// that run it, OpenBLAS (loaded at first use with the kernel set ``GEMMKernels`` chooses for
/// this CPU) for the rest.
///
/// `C[m×n] = alpha · op(A) · op(B) + bias + beta · C`, where `op(X)` is `X` or `Xᵀ` and the
/// optional `bias[n]` is added to every row.
/// Leading dimensions are row strides, which lets callers address a head's
/// columns inside a wider matrix without copying.
public enum BLAS {
    /// OpenBLAS runs single-threaded; Pando splits large products across
    /// `Parallel.workers` itself. OpenBLAS's own pool spins between calls,
    /// which on a small machine steals the cores the element-wise kernels
    /// and attention need next.
    private static let singleThreaded: Void = { _ = GEMMKernels.active }()

    /// Products below this many multiply-adds run on the calling thread.
    public static let parallelThreshold = 1 << 21

    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, bias: UnsafePointer<Float>? = nil,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        _ = singleThreaded
        let workers = Parallel.workers
        guard workers > 1, m * n * k >= parallelThreshold else {
            serial(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, bias: bias, c: c, ldc: ldc)
            return
        }
        // Split the larger output dimension into one block per worker; each
        // block is an independent product on a slice of A or B and of C.
        let operands = UnsafeSendableBox((a, b, c, bias))
        if m >= n {
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let (a, b, c, bias) = operands.value
                let lo = m * w / workers, hi = m * (w + 1) / workers
                guard hi > lo else { return }
                serial(transA: transA, transB: transB, m: hi - lo, n: n, k: k, alpha: alpha, a: transA ? a + lo : a + lo * lda, lda: lda, b: b, ldb: ldb, beta: beta, bias: bias, c: c + lo * ldc, ldc: ldc)
            }
        } else {
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let (a, b, c, bias) = operands.value
                let lo = n * w / workers, hi = n * (w + 1) / workers
                guard hi > lo else { return }
                serial(transA: transA, transB: transB, m: m, n: hi - lo, k: k, alpha: alpha, a: a, lda: lda, b: transB ? b + lo * ldb : b + lo, ldb: ldb, beta: beta, bias: bias.map { $0 + lo }, c: c + lo, ldc: ldc)
            }
        }
    }

    /// One single-threaded product, for callers that already run one task per
    /// core (attention's per-head products).
    @inline(__always)
    public static func serial(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, bias: UnsafePointer<Float>? = nil, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        _ = singleThreaded
        pando_sgemm_bias(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k),
                         alpha, a, Int32(lda), b, Int32(ldb), beta, bias, c, Int32(ldc))
    }

    /// `y = alpha · op(A) · x + beta · y` for a row-major `A[m×n]`.
    @inline(__always)
    public static func gemv(
        trans: Bool, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
        beta: Float, y: UnsafeMutablePointer<Float>
    ) {
        _ = singleThreaded
        pando_sgemv(trans ? 1 : 0, Int32(m), Int32(n), alpha, a, Int32(lda), x, beta, y)
    }

}
