import Crypto
import Foundation
import PandoTraining

/// A 32-byte PRG seed: a school's self-mask seed b_u, or a pairwise mask seed s_{u,v}
/// derived by key agreement. Must be uniformly random and used only as a mask seed.
public struct MaskSeed: Sendable, Hashable {
    public static let byteCount = 32
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.byteCount else { throw SecAggError.malformed("mask seed must be 32 bytes, got \(bytes.count)") }
        self.bytes = bytes
    }

    init(key: SymmetricKey) {
        precondition(key.bitCount == 256, "mask seeds are 256-bit keys")
        self.bytes = key.withUnsafeBytes { Array($0) }
    }

    /// A fresh seed from the system CSPRNG.
    public static func random() -> MaskSeed { MaskSeed(key: SymmetricKey(size: .bits256)) }
}

/// Expands a seed into a mask in (Z/2^32)^L, and adds or subtracts it in place.
///
/// Construction: the `AESKeystream` under key = seed, domain "PMSK", read as little-endian
/// UInt32: chunk k uses nonce "PMSK" ‖ k (UInt64 big-endian), so it is a pure function of
/// (seed, position): the coordinator regenerates exactly what the school added.
/// Re-using a (key, nonce) here only repeats the same public-zero encryption, which is
/// the point of a PRG; seeds are never used as encryption keys. With AES-NI/VAES
/// (BoringSSL on Linux, CryptoKit on macOS) this runs at several GB/s on one core.
public enum MaskPRG {
    /// UInt32 words per AES-GCM call (64 KiB of keystream).
    static let chunkWords = AESKeystream.chunkBytes / 4
    private static let noncePrefix: [UInt8] = Array("PMSK".utf8)

    /// How a mask is combined into the destination.
    public enum Sign: Sendable { case add, subtract }

    /// The first `count` mask words of `seed`.
    public static func expand(_ seed: MaskSeed, count: Int) -> [UInt32] {
        var out = [UInt32](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { apply(seed, to: $0, sign: .add) }
        return out
    }

    /// `destination[i] = destination[i] ± mask[i]` (mod 2^32) for the first
    /// `destination.count` words of `seed`'s mask.
    public static func apply(_ seed: MaskSeed, to destination: inout [UInt32], sign: Sign) {
        destination.withUnsafeMutableBufferPointer { apply(seed, to: $0, sign: sign) }
    }

    public static func apply(_ seed: MaskSeed, to destination: UnsafeMutableBufferPointer<UInt32>, sign: Sign) {
        guard let base = destination.baseAddress, destination.count > 0 else { return }
        let key = SymmetricKey(data: seed.bytes)
        let scratch = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: chunkWords)
        defer { scratch.deallocate() }
        var offset = 0
        var chunk: UInt64 = 0
        while offset < destination.count {
            let n = min(chunkWords, destination.count - offset)
            keystream(key: key, chunk: chunk, into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(scratch)[0..<(4 * n)]))
            let dst = base + offset
            switch sign {
            case .add: for i in 0..<n { dst[i] &+= UInt32(littleEndian: scratch[i]) }
            case .subtract: for i in 0..<n { dst[i] &-= UInt32(littleEndian: scratch[i]) }
            }
            offset += n
            chunk += 1
        }
    }

    /// Writes keystream bytes of chunk `chunk` into `out` (at most 64 KiB).
    static func keystream(key: SymmetricKey, chunk: UInt64, into out: UnsafeMutableRawBufferPointer) {
        AESKeystream.write(key: key, domain: noncePrefix, chunk: chunk, into: out)
    }
}

/// A deterministic `RandomNumberGenerator` over the mask PRG's keystream, for public
/// choices every party must make identically (the neighbour graph). Not for secrets.
struct KeystreamGenerator: RandomNumberGenerator {
    private let key: SymmetricKey
    private var buffer = [UInt64](repeating: 0, count: 64)
    private var position = 64
    private var chunk: UInt64 = 0

    init(seed: MaskSeed) { key = SymmetricKey(data: seed.bytes) }

    mutating func next() -> UInt64 {
        if position == buffer.count {
            let key = self.key, chunk = self.chunk
            buffer.withUnsafeMutableBytes { MaskPRG.keystream(key: key, chunk: chunk, into: $0) }
            self.chunk += 1
            position = 0
        }
        defer { position += 1 }
        return UInt64(littleEndian: buffer[position])
    }

    /// Uniform in `0..<bound` by Lemire's multiply-and-reject; fixed here (not the
    /// standard library's unspecified algorithm) so every platform draws the same numbers.
    mutating func uniform(below bound: Int) -> Int {
        precondition(bound > 0)
        let b = UInt64(bound)
        var (hi, lo) = next().multipliedFullWidth(by: b)
        if lo < b {
            let threshold = (0 &- b) % b
            while lo < threshold { (hi, lo) = next().multipliedFullWidth(by: b) }
        }
        return Int(hi)
    }
}
