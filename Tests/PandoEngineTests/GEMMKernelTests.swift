import Foundation
@testable import PandoEngine
import XCTest

/// Which OpenBLAS kernel set runs the GEMMs (issue 12): chosen from CPUID, never from
/// OpenBLAS's table of CPU models, which newer processors are missing from.
final class GEMMKernelTests: XCTestCase {
    static let avx512: Set<CPUInfo.Feature> = [.sse3, .avx, .avx2, .fma, .avx512f, .avx512bw, .avx512dq, .avx512vl]

    /// A CPU OpenBLAS 0.3.21 knows (Skylake-SP, family 6 model 85): the same core it would pick itself.
    func testKnownCPUGetsItsOwnCore() {
        let skylakeSP = CPUInfo(vendor: "GenuineIntel", family: 6, model: 85, features: Self.avx512)
        let c = GEMMCoreChoice.choose(for: skylakeSP, environment: nil)
        XCTAssertEqual(c.coreType, "SkylakeX")
        XCTAssertEqual(c.source, .pando)
        let haswell = CPUInfo(vendor: "GenuineIntel", family: 6, model: 63, features: [.sse3, .avx, .avx2, .fma])
        XCTAssertEqual(GEMMCoreChoice.choose(for: haswell, environment: nil).coreType, "Haswell")
        let zen2 = CPUInfo(vendor: "AuthenticAMD", family: 23, model: 49, features: [.sse3, .avx, .avx2, .fma])
        XCTAssertEqual(GEMMCoreChoice.choose(for: zen2, environment: nil).coreType, "Zen")
    }

    /// The CPU OpenBLAS 0.3.21 mis-detects as Prescott (Xeon, family 6 model 207, AVX-512 with
    /// VNNI, BF16, FP16) and an AVX-512 AMD EPYC (Zen 4): both get AVX-512 kernels (the BF16
    /// flavour, Cooperlake, as OpenBLAS itself picks for BF16 CPUs it knows).
    func testMisdetectedCPUsGetTheirWidestKernels() {
        let emeraldRapids = CPUInfo(vendor: "GenuineIntel", family: 6, model: 207,
                                    features: Self.avx512.union([.avx512vnni, .avx512bf16]))
        let c = GEMMCoreChoice.choose(for: emeraldRapids, environment: nil)
        XCTAssertEqual(c.coreType, "Cooperlake")
        XCTAssertEqual(GEMMCoreChoice.isa(ofCore: c.coreType!), .avx512)
        XCTAssertTrue(c.reason.contains("AVX-512"), c.reason)
        let zen4 = CPUInfo(vendor: "AuthenticAMD", family: 25, model: 17, features: Self.avx512.union([.avx512vnni, .avx512bf16]))
        XCTAssertEqual(GEMMCoreChoice.choose(for: zen4, environment: nil).coreType, "Cooperlake", "what OpenBLAS 0.3.21 picks itself on Zen 4")
        // Zen 5 (EPYC, family 26 model 2): full-width AVX-512 units, where the AVX2 cores run at half speed.
        let zen5 = CPUInfo(vendor: "AuthenticAMD", family: 26, model: 2, features: Self.avx512.union([.avx512vnni, .avx512bf16]))
        XCTAssertEqual(GEMMCoreChoice.choose(for: zen5, environment: nil).coreType, "Cooperlake", "what OpenBLAS 0.3.21 picks itself on Zen 5")
    }

    /// Without AVX2: AVX-only CPUs get the Sandy Bridge kernels; without AVX, OpenBLAS's own SSE choice.
    func testCPUsWithoutAVX2() {
        let sandy = CPUInfo(vendor: "GenuineIntel", family: 6, model: 42, features: [.sse3, .avx])
        XCTAssertEqual(GEMMCoreChoice.choose(for: sandy, environment: nil).coreType, "Sandybridge")
        let old = CPUInfo(vendor: "GenuineIntel", family: 6, model: 26, features: [.sse3])
        let c = GEMMCoreChoice.choose(for: old, environment: nil)
        XCTAssertNil(c.coreType)
        XCTAssertEqual(c.source, .openBLAS)
        // AVX-512F without BW/DQ/VL (Xeon Phi) is not enough for the SkylakeX kernels.
        let phi = CPUInfo(vendor: "GenuineIntel", family: 6, model: 87, features: [.sse3, .avx, .avx2, .fma, .avx512f])
        XCTAssertEqual(GEMMCoreChoice.choose(for: phi, environment: nil).coreType, "Haswell")
    }

    /// A core set in the environment is the user's choice and wins.
    func testEnvironmentOverrides() {
        let cpu = CPUInfo(vendor: "GenuineIntel", family: 6, model: 207, features: Self.avx512)
        let c = GEMMCoreChoice.choose(for: cpu, environment: " Haswell ")
        XCTAssertEqual(c.coreType, "Haswell")
        XCTAssertEqual(c.source, .environment)
        XCTAssertEqual(GEMMCoreChoice.choose(for: cpu, environment: "").source, .pando)
    }

    /// On the machine running the tests, the kernels run as wide as the CPU supports (fails on
    /// a machine where they would not, e.g. the system OpenBLAS picking Prescott). A core set
    /// in OPENBLAS_CORETYPE is honoured and must then be warned about when it is narrower.
    func testActiveKernelsAreAsWideAsThisCPU() throws {
        let active = GEMMKernels.active
        print(active.summary)
        print("OpenBLAS \(active.library): \(active.configuration)")
        // Pando's own choice for this CPU, and its own kernel for the large products, are as
        // wide as the CPU whatever the environment says.
        let own = GEMMCoreChoice.choose(for: .current, environment: nil)
        if let core = own.coreType {
            XCTAssertGreaterThanOrEqual(GEMMCoreChoice.isa(ofCore: core), CPUInfo.current.widestISA, "Pando would load \(core) on this CPU")
        }
        if CPUInfo.current.widestISA == .avx512, ProcessInfo.processInfo.environment["PANDO_GEMM"] != "openblas" {
            XCTAssertEqual(active.nativeKernel, "avx512-8x48", "this CPU runs AVX-512 but Pando's own SGEMM is not active")
        }
        if active.choice.source == .environment {
            XCTAssertEqual(active.coreName.lowercased(), active.choice.coreType?.lowercased(), "the environment's core was not honoured")
            if active.isa < CPUInfo.current.widestISA {
                XCTAssertTrue(active.summary.contains("WARNING"), "a narrower core from the environment must be reported: \(active.summary)")
            }
            // The user's core is honoured, so OpenBLAS's own width is not checked.
        } else {
            XCTAssertGreaterThanOrEqual(active.isa, CPUInfo.current.widestISA,
                                        "OpenBLAS runs \(active.coreName) (\(active.isa)) but this CPU supports \(CPUInfo.current.widestISA)")
            if let asked = active.choice.coreType {
                XCTAssertEqual(active.coreName.lowercased(), asked.lowercased(), "OpenBLAS did not load the core Pando asked for")
            }
        }
        // And the product is right.
        let a: [Float] = [1, 2, 3, 4, 5, 6], b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: 0, count: 4)
        BLAS.gemm(m: 2, n: 2, k: 3, a: a, lda: 3, b: b, ldb: 2, c: &c, ldc: 2)
        XCTAssertEqual(c, [58, 64, 139, 154])
    }
}
