import Dispatch
import Foundation

/// Splits `0..<count` into at most `Parallel.workers` contiguous chunks of at
/// least `minimumChunk` items and runs `body` on each chunk concurrently.
///
/// Element-wise kernels use this for their outer loop, and `BLAS.gemm` to
/// split a large product into one single-threaded OpenBLAS call per worker.
public enum Parallel {
    /// Worker count for element-wise kernels: the number of online cores.
    nonisolated(unsafe) public static var workers: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    @inlinable
    public static func forRanges(_ count: Int, minimumChunk: Int = 1024, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(workers, max(1, count / max(1, minimumChunk)))
        if chunks == 1 { body(0..<count); return }
        withoutActuallyEscaping(body) { body in
            let box = UnsafeSendableBox(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let lo = count * chunk / chunks
                let hi = count * (chunk + 1) / chunks
                box.value(lo..<hi)
            }
        }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, spread over the workers.
    @inlinable
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        forRanges(count, minimumChunk: 1) { range in for i in range { body(i) } }
    }
}

/// Carries a non-Sendable closure into `concurrentPerform`; the kernels using
/// it write disjoint ranges, which is what makes this sound.
@usableFromInline
struct UnsafeSendableBox<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}
