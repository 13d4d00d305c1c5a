import CPandoKernels
import Foundation
import PandoData
@testable import PandoEngine
import PandoTestSupport
import XCTest

/// Pando's own AVX-512 SGEMM (sgemm.c), which runs the large products on CPUs that have it:
/// every transpose, edge tile, depth block and epilogue against double precision, and the
/// model's gradients through it against OpenBLAS's.
final class NativeGEMMTests: XCTestCase {
    /// Runs `body` with every product on Pando's kernel, then restores the automatic choice.
    func withNativeKernel(_ body: () throws -> Void) throws {
        guard pando_sgemm_select(2) == 1 else { throw XCTSkip("this CPU has no AVX-512 F/BW/DQ/VL: OpenBLAS runs every GEMM") }
        defer { _ = pando_sgemm_select(-1) }
        try body()
    }

    /// C = alpha·op(A)·op(B) + bias + beta·C in double precision, row-major.
    func reference(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: [Float], lda: Int,
                   b: [Float], ldb: Int, beta: Float, bias: [Float]?, c: [Float], ldc: Int) -> [Float] {
        var out = c
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p]
                    let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s += Double(x) * Double(y)
                }
                let previous = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                out[i * ldc + j] = Float(Double(alpha) * s + Double(bias?[j] ?? 0) + previous)
            }
        }
        return out
    }

    /// Shapes that hit every edge: tiles cut in both directions, several row blocks (MC = 64),
    /// one depth block (k ≤ 1536) and several (KC = 512: k = 1700, and k = 1100 with a packed
    /// B over 2²⁰ floats), several column blocks (NC = 1536), a single row and column, and
    /// leading dimensions wider than the matrices.
    func testEveryTransposeAndEdgeMatchesDoublePrecision() throws {
        try withNativeKernel {
            var counter = 0
            func uniform() -> Float { counter += 1; return CounterRandom.uniform(12, counter) - 0.5 }
            let shapes: [(m: Int, n: Int, k: Int)] = [(37, 53, 19), (130, 97, 600), (8, 48, 512), (1, 1, 1), (3, 1600, 5), (70, 17, 1700), (5, 1000, 1100)]
            for (m, n, k) in shapes {
                for transA in [false, true] {
                    for transB in [false, true] {
                        for (alpha, beta, withBias) in [(Float(1), Float(0), false), (1, 1, true), (0.37, -0.5, true)] {
                            let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 5, ldc = n + 2
                            let a = (0..<((transA ? k : m) * lda)).map { _ in uniform() }
                            let b = (0..<((transB ? n : k) * ldb)).map { _ in uniform() }
                            let bias = withBias ? (0..<n).map { _ in uniform() } : nil
                            let c0 = (0..<(m * ldc)).map { _ in uniform() }
                            let expected = reference(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                                                     b: b, ldb: ldb, beta: beta, bias: bias, c: c0, ldc: ldc)
                            var c = c0
                            let ran = a.withUnsafeBufferPointer { a in
                                b.withUnsafeBufferPointer { b in
                                    (bias ?? []).withUnsafeBufferPointer { bias in
                                        c.withUnsafeMutableBufferPointer { c in
                                            pando_sgemm_native(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha,
                                                               a.baseAddress, Int32(lda), b.baseAddress, Int32(ldb), beta,
                                                               withBias ? bias.baseAddress : nil, c.baseAddress, Int32(ldc))
                                        }
                                    }
                                }
                            }
                            let what = "m \(m) n \(n) k \(k) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta) bias \(withBias)"
                            XCTAssertEqual(ran, 0, "\(what): the native kernel did not run")
                            var worst: Float = 0
                            for i in 0..<m {
                                for j in 0..<ldc {
                                    let index = i * ldc + j
                                    if j >= n {
                                        XCTAssertEqual(c[index], c0[index], "\(what): wrote past column n")
                                        continue
                                    }
                                    worst = max(worst, abs(c[index] - expected[index]) / (1 + abs(expected[index])))
                                }
                            }
                            XCTAssertLessThan(worst, 2e-6 * Float(k).squareRoot() + 1e-6, what)
                        }
                    }
                }
            }
        }
    }

    /// `BLAS.gemm` with a bias gives the same answer on either path (OpenBLAS adds the bias
    /// in its own pass), split across workers or not.
    func testBiasOnBothPathsAndSplits() throws {
        var counter = 0
        func uniform() -> Float { counter += 1; return CounterRandom.uniform(5, counter) - 0.5 }
        for (m, n, k) in [(300, 200, 64), (20, 900, 300), (5, 7, 3)] {
            let a = (0..<(m * k)).map { _ in uniform() }
            let w = (0..<(n * k)).map { _ in uniform() }
            let bias = (0..<n).map { _ in uniform() }
            let expected = reference(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: w, ldb: k,
                                     beta: 0, bias: bias, c: [Float](repeating: 0, count: m * n), ldc: n)
            for mode: Int32 in [0, -1] {
                _ = pando_sgemm_select(mode)
                defer { _ = pando_sgemm_select(-1) }
                var c = [Float](repeating: .nan, count: m * n)
                BLAS.gemm(transB: true, m: m, n: n, k: k, a: a, lda: k, b: w, ldb: k, bias: bias, c: &c, ldc: n)
                let (diff, _) = maxDifference(c, expected)
                XCTAssertLessThan(diff, 1e-5, "m \(m) n \(n) k \(k) mode \(mode)")
            }
        }
    }

    /// The tiny model's loss and every gradient are the same with all of its products on
    /// Pando's kernel as on OpenBLAS (the MiniLM parity tests cover the automatic choice).
    func testModelGradientsThroughTheNativeKernelMatchOpenBLAS() throws {
        let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: .pooler)
        let model = try BertModel.load(from: TestFixtures.url("tiny/softmax"), head: head, seed: 1).0
        let batch = TestFixtures.packedBatch(try TestFixtures.json("tiny/inputs.json"))
        let targets = Targets.classes([0, 2, 1, 2])
        func run() -> (Float, ParameterBuffer) {
            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: true)
            let g = ParameterBuffer(layout: model.layout)
            let loss = model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: g, dropout: nil)
            return (loss, g)
        }
        _ = pando_sgemm_select(0)
        let (openLoss, openGrads) = run()
        try withNativeKernel {
            let (loss, grads) = run()
            XCTAssertEqual(loss, openLoss, accuracy: 1e-6 * max(1, abs(openLoss)))
            var checked = 0
            for spec in model.layout.tensors {
                let (diff, scale) = maxDifference(grads.view(spec).array, openGrads.view(spec).array)
                XCTAssertLessThanOrEqual(diff, 1e-5 * max(scale, 1e-2), spec.name)
                if scale > 0 { checked += 1 }
            }
            XCTAssertGreaterThan(checked, model.layout.tensors.count / 2, "gradients are not all zero")
        }
    }

    /// On a CPU with AVX-512, the large products run on Pando's kernel unless the user turned it
    /// off; and the report says which runs.
    func testNativeKernelRunsWhereTheCPUHasIt() throws {
        let summary = GEMMKernels.active.summary
        if ProcessInfo.processInfo.environment["PANDO_GEMM"] == "openblas" {
            XCTAssertNil(GEMMKernels.active.nativeKernel)
            XCTAssertTrue(summary.contains("PANDO_GEMM=openblas"), summary)
            throw XCTSkip("PANDO_GEMM=openblas is set in this environment")
        }
        if CPUInfo.current.widestISA == .avx512 {
            XCTAssertEqual(GEMMKernels.active.nativeKernel, "avx512-8x48")
            XCTAssertTrue(summary.hasPrefix("GEMM kernels: Pando avx512-8x48"), summary)
        } else {
            XCTAssertNil(GEMMKernels.active.nativeKernel)
            XCTAssertTrue(summary.hasPrefix("GEMM kernels: OpenBLAS core"), summary)
        }
        XCTAssertFalse(summary.contains("set in the environment") && ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
                       "Pando's own OPENBLAS_CORETYPE was reported as the user's: \(summary)")
    }
}
