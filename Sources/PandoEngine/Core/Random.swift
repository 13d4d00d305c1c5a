/// Counter-based random numbers: a value is a pure function of a key and an
/// index, so dropout masks can be regenerated in the backward pass instead of
/// stored, any thread can draw any element, and a seed reproduces a step.
public enum CounterRandom {
    /// SplitMix64's finaliser: a bijective 64-bit mix with full avalanche.
    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A stream key derived from a seed and any number of stream coordinates.
    @inline(__always)
    public static func key(_ seed: UInt64, _ a: UInt64, _ b: UInt64 = 0) -> UInt64 {
        mix(mix(mix(seed) ^ a) ^ (b &* 0xD6E8_FEB8_6659_FD93))
    }

    /// A uniform value in [0, 1) with 24 random bits.
    @inline(__always)
    public static func uniform(_ key: UInt64, _ index: Int) -> Float {
        Float(mix(key &+ UInt64(truncatingIfNeeded: index)) >> 40) * 0x1p-24
    }

    /// A standard normal value (Box–Muller over two uniforms).
    @inline(__always)
    public static func normal(_ key: UInt64, _ index: Int) -> Float {
        let bits = mix(key &+ UInt64(truncatingIfNeeded: index))
        let u1 = (Double(bits >> 32) + 1) * 0x1p-32
        let u2 = Double(bits & 0xFFFF_FFFF) * 0x1p-32
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }
}

import Foundation
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }
