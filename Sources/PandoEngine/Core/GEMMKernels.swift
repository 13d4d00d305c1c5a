import CPandoKernels
import Foundation

/// A processor as CPUID describes it (features only where the OS also saves their registers).
public struct CPUInfo: Sendable, Equatable, CustomStringConvertible {
    public enum Feature: String, Sendable, CaseIterable, Comparable {
        case sse3, avx, avx2, fma, avx512f, avx512bw, avx512dq, avx512vl, avx512vnni, avx512bf16
        public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
    }

    public var vendor: String
    public var family: Int
    public var model: Int
    public var features: Set<Feature>

    public init(vendor: String, family: Int, model: Int, features: Set<Feature>) {
        self.vendor = vendor
        self.family = family
        self.model = model
        self.features = features
    }

    /// This machine's processor.
    public static let current: CPUInfo = {
        var c = pando_cpu()
        pando_cpu_identify(&c)
        let vendor = withUnsafeBytes(of: c.vendor) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let flags: [(Feature, Int32)] = [(.sse3, c.sse3), (.avx, c.avx), (.avx2, c.avx2), (.fma, c.fma), (.avx512f, c.avx512f),
                                          (.avx512bw, c.avx512bw), (.avx512dq, c.avx512dq), (.avx512vl, c.avx512vl),
                                          (.avx512vnni, c.avx512vnni), (.avx512bf16, c.avx512bf16)]
        return CPUInfo(vendor: vendor, family: Int(c.family), model: Int(c.model), features: Set(flags.filter { $0.1 != 0 }.map(\.0)))
    }()

    /// The widest vector instruction set a GEMM kernel can use here.
    public var widestISA: VectorISA {
        if features.isSuperset(of: [.avx512f, .avx512bw, .avx512dq, .avx512vl]) { return .avx512 }
        if features.isSuperset(of: [.avx2, .fma]) { return .avx2 }
        if features.contains(.avx) { return .avx }
        return .baseline
    }

    public var description: String {
        let name = vendor == "GenuineIntel" ? "Intel" : vendor == "AuthenticAMD" ? "AMD" : vendor.isEmpty ? "unknown vendor" : vendor
        return "\(name) family \(family) model \(model) (\(features.sorted().map(\.rawValue).joined(separator: " ")))"
    }
}

/// Vector instruction sets in the order of their width.
public enum VectorISA: Int, Sendable, Comparable, CustomStringConvertible {
    case baseline, avx, avx2, avx512
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
        switch self {
        case .baseline: return "SSE (baseline)"
        case .avx: return "AVX"
        case .avx2: return "AVX2 + FMA"
        case .avx512: return "AVX-512"
        }
    }
}

/// Which OpenBLAS kernel set ("core") Pando asks for, and why.
///
/// OpenBLAS's own detection maps CPU models it knows to cores; a model newer than the
/// installed OpenBLAS gets a generic one (Debian's 0.3.21 runs Prescott SSE3 kernels on an
/// AVX-512 Xeon of family 6, model 207). Pando decides from the CPU's features instead, so
/// a new processor gets the widest kernels it can run.
public struct GEMMCoreChoice: Sendable, Equatable {
    public enum Source: String, Sendable { case pando, environment, openBLAS }
    /// The OPENBLAS_CORETYPE to load with; `nil` leaves the choice to OpenBLAS.
    public var coreType: String?
    public var source: Source
    public var reason: String

    /// The choice for `cpu`; `environment` is OPENBLAS_CORETYPE as the user set it.
    public static func choose(for cpu: CPUInfo, environment: String?) -> GEMMCoreChoice {
        if let env = environment?.trimmingCharacters(in: .whitespaces), !env.isEmpty {
            return GEMMCoreChoice(coreType: env, source: .environment, reason: "OPENBLAS_CORETYPE=\(env) is set in the environment")
        }
        let amd = cpu.vendor == "AuthenticAMD"
        switch cpu.widestISA {
        case .avx512:
            // Cooperlake is SkylakeX's kernel set plus the BF16 ones; OpenBLAS picks it itself
            // for the AVX-512 BF16 CPUs it knows (AMD Zen 4 among them).
            let bf16 = cpu.features.contains(.avx512bf16)
            return GEMMCoreChoice(coreType: bf16 ? "Cooperlake" : "SkylakeX", source: .pando,
                                  reason: "the CPU runs AVX-512 (F, BW, DQ, VL\(bf16 ? ", BF16" : "")); chosen from CPUID, not from OpenBLAS's table of CPU models")
        case .avx2:
            return GEMMCoreChoice(coreType: amd ? "Zen" : "Haswell", source: .pando,
                                  reason: "the CPU runs AVX2 + FMA but not AVX-512; chosen from CPUID, not from OpenBLAS's table of CPU models")
        case .avx:
            return GEMMCoreChoice(coreType: "Sandybridge", source: .pando, reason: "the CPU runs AVX but not AVX2")
        case .baseline:
            return GEMMCoreChoice(coreType: nil, source: .openBLAS,
                                  reason: "the CPU has no AVX: OpenBLAS's own detection picks among its SSE kernels")
        }
    }

    /// The instruction set an OpenBLAS core's SGEMM kernels use (by OpenBLAS's core names).
    public static func isa(ofCore name: String) -> VectorISA {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "skylake", "excavator": return .avx2
        case "sandybridge", "bulldozer", "piledriver", "steamroller": return .avx
        default: return .baseline
        }
    }
}

/// The OpenBLAS that runs Pando's GEMMs: loaded once, on first use, with ``GEMMCoreChoice``.
public struct GEMMKernels: Sendable {
    public let cpu: CPUInfo
    public let choice: GEMMCoreChoice
    /// OpenBLAS's name for the core it runs (what it reports, not what was asked).
    public let coreName: String
    public let library: String
    public let configuration: String

    public var isa: VectorISA { GEMMCoreChoice.isa(ofCore: coreName) }

    /// Loads OpenBLAS (first call only) and says what runs. Traps with the reason if OpenBLAS
    /// cannot be loaded: every program needs it, and there is no slower fallback to hide behind.
    public static let active: GEMMKernels = {
        let cpu = CPUInfo.current
        let choice = GEMMCoreChoice.choose(for: cpu, environment: userCoreType)
        let status = choice.coreType.map { pando_blas_load($0) } ?? pando_blas_load(nil)
        guard status == 0 else { fatalError(String(cString: pando_blas_error())) }
        return GEMMKernels(cpu: cpu, choice: choice, coreName: String(cString: pando_blas_corename()),
                           library: String(cString: pando_blas_path()), configuration: String(cString: pando_blas_config()))
    }()

    /// Sets OpenBLAS's environment for the chosen core without loading it. Executables call
    /// this first thing, while they are single-threaded; loading happens at the first GEMM.
    public static func prepareEnvironment() {
        let choice = GEMMCoreChoice.choose(for: CPUInfo.current, environment: userCoreType)
        pando_blas_prepare(choice.coreType)
    }

    /// OPENBLAS_CORETYPE as the user set it, read before Pando sets it for OpenBLAS (so the
    /// report does not mistake Pando's own choice for the user's).
    private static let userCoreType: String? = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]

    /// Pando's own SGEMM kernel when it runs the large products ("avx512-8x48"), nil when
    /// OpenBLAS runs every GEMM (no AVX-512, or PANDO_GEMM=openblas).
    public var nativeKernel: String? {
        _ = GEMMKernels.active
        return pando_sgemm_kernel_name().map { String(cString: $0) }
    }

    /// One line for a program's start-up log.
    public var summary: String {
        var s = "GEMM kernels: "
        if let native = nativeKernel {
            s += "Pando \(native) for large products (PANDO_GEMM=openblas turns it off), "
        } else if ProcessInfo.processInfo.environment["PANDO_GEMM"] == "openblas" {
            s += "Pando's own kernel off (PANDO_GEMM=openblas), "
        }
        s += "OpenBLAS core \(coreName) (\(isa)) on \(cpu); \(choice.reason)"
        if let value = ProcessInfo.processInfo.environment["PANDO_GEMM"], value != "openblas" {
            s += "; PANDO_GEMM=\(value) is ignored (the one value it takes is openblas)"
        }
        if isa < cpu.widestISA {
            s += "; WARNING: the CPU supports \(cpu.widestISA), so GEMMs run slower than they could"
            if choice.source == .environment, let own = GEMMCoreChoice.choose(for: cpu, environment: nil).coreType {
                s += " (unset OPENBLAS_CORETYPE and Pando loads \(own))"
            }
        }
        return s
    }
}
