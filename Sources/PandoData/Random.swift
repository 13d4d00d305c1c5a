import Foundation

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny seeded generator that yields the
/// same 64-bit stream on every platform, so splits and shards are reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// The helpers below use only `next()`, never the standard library's
// `random(in:)`/`shuffle()`, whose algorithms may change between Swift versions.
// Integer draws and shuffles are bit-exact everywhere; Gamma draws use libm
// (log, sqrt, pow), which may differ in the last bit between platforms.
extension RandomNumberGenerator {
    /// Uniform integer in 0..<n (Lemire's multiply-and-reject; unbiased).
    mutating func index(below n: Int) -> Int {
        precondition(n > 0)
        let bound = UInt64(n)
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold { m = next().multipliedFullWidth(by: bound) }
        }
        return Int(m.high)
    }

    /// Uniform double in the open interval (0, 1).
    mutating func unitOpen() -> Double {
        (Double(next() >> 11) + 0.5) * 0x1p-53
    }

    /// Standard normal (Box–Muller, one value per call).
    mutating func standardNormal() -> Double {
        let u1 = unitOpen(), u2 = unitOpen()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    /// Gamma(shape, 1) by Marsaglia & Tsang (2000); shape < 1 uses the
    /// Gamma(shape + 1) · U^(1/shape) boost.
    mutating func gamma(shape: Double) -> Double {
        precondition(shape > 0)
        if shape < 1 {
            let g = gamma(shape: shape + 1)
            return g * Foundation.pow(unitOpen(), 1 / shape)
        }
        let d = shape - 1.0 / 3.0
        let c = 1 / (9 * d).squareRoot()
        while true {
            var x: Double, v: Double
            repeat {
                x = standardNormal()
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = unitOpen()
            if u < 1 - 0.0331 * x * x * x * x { return d * v }
            if Foundation.log(u) < 0.5 * x * x + d * (1 - v + Foundation.log(v)) { return d * v }
        }
    }

    /// Proportions drawn from a symmetric Dirichlet(alpha) over `count` parts.
    mutating func dirichlet(alpha: Double, count: Int) -> [Double] {
        var g = (0..<count).map { _ in gamma(shape: alpha) }
        let sum = g.reduce(0, +)
        if sum > 0 {
            for i in g.indices { g[i] /= sum }
        } else {
            // Every draw underflowed (tiny alpha): put all mass on one part.
            g = [Double](repeating: 0, count: count)
            g[index(below: count)] = 1
        }
        return g
    }
}

/// Fisher–Yates shuffle driven only by `next()` (reproducible across Swift versions).
public func seededShuffle<T>(_ array: inout [T], using rng: inout some RandomNumberGenerator) {
    guard array.count > 1 else { return }
    for i in stride(from: array.count - 1, to: 0, by: -1) {
        let j = rng.index(below: i + 1)
        if i != j { array.swapAt(i, j) }
    }
}
