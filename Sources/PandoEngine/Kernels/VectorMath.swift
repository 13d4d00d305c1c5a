/// Vectorised transcendental functions for the element-wise kernels: the
/// C library's `expf`/`erff` are scalar calls, which made GELU and softmax a
/// quarter of inference time. Accuracy is within a few ulp of `Float` over
/// the ranges BERT activations take; the PyTorch parity tests cover them.
public enum VectorMath {
    public typealias V = SIMD8<Float>

    /// `eˣ` by range reduction to `r ∈ [−ln2/2, ln2/2]`, a degree-6
    /// polynomial, and exponent-bit scaling. Inputs below −87 give 0; inputs
    /// must not exceed 88 (callers pass non-positive values).
    @inline(__always)
    public static func exp(_ x: V) -> V {
        // Adding 1.5·2²³ rounds x·log₂e to an integer held in the low mantissa bits.
        let shifter: Float = 12_582_912
        let t = x * 1.442_695_04 + shifter
        let n = t - shifter
        let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6
        var p = V(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let integer = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((integer &+ 127) &<< 23, to: V.self)
        return (p * scale).replacing(with: 0, where: x .< -87)
    }

    /// `erf(x)` as an odd rational function of `x` on [−4, 4] (beyond which
    /// it is ±1 to Float precision); absolute error below 1e-7.
    @inline(__always)
    public static func erf(_ x: V) -> V {
        var x = x.replacing(with: 4, where: x .> 4)
        x = x.replacing(with: -4, where: x .< -4)
        let x2 = x * x
        var p = x2 * -2.726_142_3e-10 + 2.770_681_4e-08
        p = p * x2 - 2.101_024_e-06
        p = p * x2 - 5.692_506_4e-05
        p = p * x2 - 7.349_906_3e-04
        p = p * x2 - 2.954_600_e-03
        p = p * x2 - 1.609_603_3e-02
        var q = x2 * -1.456_607_2e-05 - 2.133_740_6e-04
        q = q * x2 - 1.682_827e-03
        q = q * x2 - 7.373_329_2e-03
        q = q * x2 - 1.426_474e-02
        return x * p / q
    }

    /// Exact (erf) GELU.
    @inline(__always)
    public static func gelu(_ x: V) -> V { 0.5 * x * (1 + erf(x * 0.707_106_77)) }

    /// Derivative of exact GELU: `Φ(x) + x·φ(x)`.
    @inline(__always)
    public static func geluDerivative(_ x: V) -> V {
        0.5 * (1 + erf(x * 0.707_106_77)) + x * 0.398_942_3 * exp(-0.5 * x * x)
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
}
