import Foundation
import PandoData

/// Fixed-point encoding of weighted updates into Z/2^32, sized so that the sum over
/// all schools can never wrap.
///
/// School i with integer weight w_i ∈ [0, W] (its example count, capped at W) and values
/// x ∈ R^L sends L + 1 words:
///   slot j < L:  q_j = clamp(round(s · w_i · clip(x_j, −c, c)), −M, M)   (two's complement)
///   slot L:      w_i
/// where M = ⌊(2^31 − 1)/n⌋ and n is the most schools that can contribute (the roster size).
///
/// Overflow argument. Every value slot satisfies |q_j| ≤ M by the final clamp, so any sum
/// of at most n of them has |Σ q_j| ≤ n·M ≤ 2^31 − 1 and its two's complement reading
/// mod 2^32 is exact. The clamp never changes a value when s ≤ s_max = M/(W·c), because
/// then |s·w_i·x̃_j| ≤ M already (it only guards against floating-point edge cases);
/// `maximumSafeScale` returns s_max and `init` refuses larger scales. The weight slot is
/// an exact integer; requiring W ≤ M (`maximumWeight`) makes Σ w_i ≤ n·W ≤ 2^31 − 1.
///
/// Quantisation bound. The coordinator decodes the mean of the clipped values as
/// μ̂_j = Σ q_j / (s · Σ w_i). Nearest rounding moves each q by at most 1/2 (stochastic
/// rounding by less than 1, but unbiased), so with m contributors
///   |μ̂_j − Σ w_i x̃_j / Σ w_i| ≤ m / (2 s Σ w_i)   (nearest)   or   m / (s Σ w_i)   (stochastic),
/// plus c·2^−24 for rounding the result to Float. `meanErrorBound` computes this.
/// Clipping itself is not quantisation error: the mean is that of the clipped values.
/// Default rounding is nearest (deterministic, reproducible); stochastic is available
/// for many-round training where its unbiasedness matters more than the 2× bound.
public struct FixedPointEncoding: Sendable, Hashable, Codable {
    public enum Rounding: String, Sendable, Hashable, Codable { case nearest, stochastic }

    /// c: values are clipped to [−c, c] before scaling.
    public let clip: Double
    /// W: largest weight (example count) a school may send; larger counts are refused.
    public let maxWeight: UInt32
    /// n: most schools whose inputs can be summed (the round's roster size).
    public let maxSchools: Int
    /// s: fixed-point scale, ≤ `maximumSafeScale(clip:maxWeight:maxSchools:)`.
    public let scale: Double
    public let rounding: Rounding

    /// M = ⌊(2^31 − 1)/n⌋: the bound on every encoded slot of one school.
    public var perSchoolBound: Int64 { Self.perSchoolBound(maxSchools: maxSchools) }

    static func perSchoolBound(maxSchools n: Int) -> Int64 { Int64(Int32.max) / Int64(max(n, 1)) }

    /// The largest weight cap W keeping the summed weight slot below 2^31: ⌊(2^31 − 1)/n⌋.
    public static func maximumWeight(maxSchools: Int) -> UInt32 { UInt32(perSchoolBound(maxSchools: maxSchools)) }

    /// s_max = ⌊(2^31 − 1)/n⌋ / (W·c): the largest scale at which n schools' sums cannot overflow.
    public static func maximumSafeScale(clip: Double, maxWeight: UInt32, maxSchools: Int) -> Double {
        precondition(clip > 0 && maxWeight > 0 && maxSchools > 0, "clip, weight cap and school count must be positive")
        return Double(perSchoolBound(maxSchools: maxSchools)) / (Double(maxWeight) * clip)
    }

    /// - Parameter scale: defaults to the maximum safe scale (the finest resolution).
    public init(clip: Double, maxWeight: UInt32, maxSchools: Int, scale: Double? = nil, rounding: Rounding = .nearest) throws {
        guard clip.isFinite, clip > 0 else { throw SecAggError.invalidConfiguration("clip must be finite and > 0, got \(clip)") }
        guard maxSchools >= 1 else { throw SecAggError.invalidConfiguration("maxSchools must be ≥ 1") }
        guard maxWeight >= 1, maxWeight <= Self.maximumWeight(maxSchools: maxSchools) else {
            throw SecAggError.invalidConfiguration(
                "weight cap \(maxWeight) must be in 1...\(Self.maximumWeight(maxSchools: maxSchools)) for \(maxSchools) schools")
        }
        let safe = Self.maximumSafeScale(clip: clip, maxWeight: maxWeight, maxSchools: maxSchools)
        let s = scale ?? safe
        guard s.isFinite, s > 0, s <= safe else {
            throw SecAggError.invalidConfiguration("scale \(s) must be in (0, \(safe)] for clip \(clip), weight cap \(maxWeight), \(maxSchools) schools")
        }
        self.clip = clip
        self.maxWeight = maxWeight
        self.maxSchools = maxSchools
        self.scale = s
        self.rounding = rounding
    }

    /// Worst-case |decoded mean − exact weighted mean of clipped values| for `contributors`
    /// schools of total weight `totalWeight`, including the final rounding to Float.
    public func meanErrorBound(totalWeight: UInt64, contributors: Int) -> Double {
        guard totalWeight > 0 else { return .infinity }
        // + 2^-20 covers the one Double rounding of s·w·x̃ (|y| ≤ 2^31, so ≤ 2^-22 in q units).
        let perSchool = (rounding == .nearest ? 0.5 : 1.0) + 0x1p-20
        return Double(contributors) * perSchool / (scale * Double(totalWeight)) + clip * 0x1p-24
    }

    /// Encodes `values` weighted by `weight` into `destination` (count L + 1).
    public func encode(_ values: UnsafeBufferPointer<Float>, weight: UInt32, into destination: UnsafeMutableBufferPointer<UInt32>) throws {
        guard destination.count == values.count + 1 else {
            throw SecAggError.malformed("destination holds \(destination.count) words, need \(values.count + 1)")
        }
        guard weight <= maxWeight else { throw SecAggError.weightAboveCap(weight, cap: maxWeight) }
        if let bad = values.firstIndex(where: { !$0.isFinite }) { throw SecAggError.nonFiniteValue(index: bad) }
        let factor = scale * Double(weight)
        let c = clip, m = Double(perSchoolBound)
        switch rounding {
        case .nearest:
            for j in 0..<values.count {
                let y = min(max(Double(values[j]), -c), c) * factor
                let q = min(max(y.rounded(.toNearestOrEven), -m), m)
                destination[j] = UInt32(bitPattern: Int32(q))
            }
        case .stochastic:
            var rng = SplitMix64(seed: UInt64.random(in: .min ... .max))  // noise for rounding only: the masks hide it
            for j in 0..<values.count {
                let y = min(max(Double(values[j]), -c), c) * factor
                let f = y.rounded(.down)
                let u = Double(rng.next() >> 11) * 0x1p-53  // uniform in [0, 1)
                let q = min(max(f + (u < y - f ? 1 : 0), -m), m)
                destination[j] = UInt32(bitPattern: Int32(q))
            }
        }
        destination[values.count] = weight
    }

    /// Convenience for arrays: returns the L + 1 encoded words.
    public func encode(_ values: [Float], weight: UInt32) throws -> [UInt32] {
        var out = [UInt32](repeating: 0, count: values.count + 1)
        try values.withUnsafeBufferPointer { v in try out.withUnsafeMutableBufferPointer { try encode(v, weight: weight, into: $0) } }
        return out
    }

    /// Decodes an unmasked sum of `contributors` schools' encodings into the weighted mean
    /// (L values) and the total weight.
    public func decodeMean(_ sum: [UInt32], contributors: Int) throws -> (mean: [Float], totalWeight: UInt64) {
        guard !sum.isEmpty else { throw SecAggError.malformed("empty sum") }
        guard contributors >= 1, contributors <= maxSchools else {
            throw SecAggError.malformed("\(contributors) contributors for an encoding sized for \(maxSchools)")
        }
        let totalWeight = UInt64(sum[sum.count - 1])
        // Σ w_i ≤ m·W: anything larger means the sum was not unmasked correctly.
        guard totalWeight <= UInt64(contributors) * UInt64(maxWeight) else {
            throw SecAggError.malformed("weight slot \(totalWeight) exceeds \(contributors) × \(maxWeight); masks not removed?")
        }
        guard totalWeight > 0 else { throw SecAggError.malformed("total weight is zero") }
        let inv = 1 / (scale * Double(totalWeight))
        var mean = [Float](repeating: 0, count: sum.count - 1)
        for j in mean.indices { mean[j] = Float(Double(Int32(bitPattern: sum[j])) * inv) }
        return (mean, totalWeight)
    }

    /// Decodes an unmasked sum into Σ w_i·x̃_i (not divided by the weights).
    public func decodeWeightedSum(_ sum: [UInt32]) -> [Double] {
        sum.dropLast().map { Double(Int32(bitPattern: $0)) / scale }
    }
}
