import Crypto
import Foundation
import PandoData
import PandoEngine

/// DP-SGD's randomness from a cryptographic generator: which examples each step samples
/// and the Gaussian noise. Both must be unpredictable to whoever sees the update, or the
/// guarantee is void; the seeded generators of the engine are for tests only.
///
/// Construction: an `AESKeystream` under a fresh key from the system CSPRNG,
/// turned into normals by Box–Muller in double precision (the vectorised `Elementwise.boxMuller`;
/// words are read in the byte order of a little-endian CPU, which every supported one is):
/// 32-bit uniforms, so the largest magnitude drawn is √(−2 ln 2⁻³²) ≈ 6.7. Chunks are
/// independent, so both cores fill them.
public final class SecureRandomness: DPRandomness, @unchecked Sendable {
    private let key = SymmetricKey(size: .bits256)
    private var chunk: UInt64 = 0
    static let chunkWords = AESKeystream.chunkBytes / 4

    public init() {}

    /// Writes keystream chunk `index` (64 KiB) into `out`.
    private func keystream(_ index: UInt64, into out: UnsafeMutablePointer<UInt32>) {
        AESKeystream.write(key: key, domain: Array("PDPN".utf8), chunk: index,
                           into: UnsafeMutableRawBufferPointer(start: out, count: Self.chunkWords * 4))
    }

    /// Reserves `count` keystream chunks for one call, so concurrent chunks never repeat.
    private func reserve(_ count: Int) -> UInt64 {
        defer { chunk += UInt64(count) }
        return chunk
    }

    public func fillStandardNormal(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let words = Self.chunkWords, chunks = (count + words - 1) / words
        let first = reserve(chunks)
        Parallel.forRanges(chunks, minimumChunk: 1) { range in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: words) { bits in
                for c in range {
                    self.keystream(first + UInt64(c), into: bits.baseAddress!)
                    Elementwise.boxMuller(bits.baseAddress!, count: min(words, count - c * words), into: x + c * words)
                }
            }
        }
    }

    public func poissonSample(count: Int, rate: Double) -> [Int] {
        precondition(rate >= 0 && rate <= 1, "sampling rate \(rate) outside [0, 1]")
        // Each example independently with probability q: a 64-bit uniform below q·2⁶⁴.
        let threshold = rate >= 1 ? UInt64.max : UInt64(rate * 0x1p64)
        var chosen: [Int] = []
        chosen.reserveCapacity(Int(Double(count) * rate * 1.5) + 16)
        let words = Self.chunkWords
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: words) { bits in
            var i = 0
            while i < count {
                keystream(reserve(1), into: bits.baseAddress!)
                var w = 0
                while w + 1 < words && i < count {
                    let u = UInt64(bits[w]) << 32 | UInt64(bits[w + 1])
                    if u < threshold || rate >= 1 { chosen.append(i) }
                    i += 1
                    w += 2
                }
            }
        }
        return chosen
    }
}

/// A seeded stand-in with the same interface, for tests and reproducible experiments only:
/// its samples and noise follow from the seed.
public final class SeededRandomness: DPRandomness, @unchecked Sendable {
    private let noise: SeededGaussianNoise
    private var rng: SplitMix64
    public init(seed: UInt64) {
        noise = SeededGaussianNoise(seed: seed)
        rng = SplitMix64(seed: seed ^ 0x5A_4D9E)
    }
    public func fillStandardNormal(_ x: UnsafeMutablePointer<Float>, count: Int) { noise.fillStandardNormal(x, count: count) }
    public func poissonSample(count: Int, rate: Double) -> [Int] {
        (0..<count).filter { _ in Double(rng.next() >> 11) * 0x1p-53 < rate }
    }
}

/// DP-SGD's two random choices: Poisson sampling of examples and Gaussian noise.
public protocol DPRandomness: GaussianNoiseSource, Sendable {
    /// The positions in `0..<count` chosen independently with probability `rate`.
    func poissonSample(count: Int, rate: Double) -> [Int]
}
