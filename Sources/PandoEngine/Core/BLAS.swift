import COpenBLAS

/// Row-major single-precision GEMM through OpenBLAS.
///
/// `C[m×n] = alpha · op(A) · op(B) + beta · C`, where `op(X)` is `X` or `Xᵀ`.
/// Leading dimensions are row strides, which lets callers address a head's
/// columns inside a wider matrix without copying.
public enum BLAS {
    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb),
            beta, c, Int32(ldc))
    }

    /// `y = alpha · op(A) · x + beta · y` for a row-major `A[m×n]`.
    @inline(__always)
    public static func gemv(
        trans: Bool, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
        beta: Float, y: UnsafeMutablePointer<Float>
    ) {
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), alpha, a, Int32(lda), x, 1, beta, y, 1)
    }

    /// Threads OpenBLAS uses for one call.
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(newValue)) }
    }

    /// Runs `body` with OpenBLAS limited to `count` threads, then restores the
    /// previous setting. Used where the caller parallelises small GEMMs itself.
    @inline(__always)
    public static func withThreads<R>(_ count: Int, _ body: () throws -> R) rethrows -> R {
        let previous = threads
        if previous == count { return try body() }
        threads = count
        defer { threads = previous }
        return try body()
    }
}
