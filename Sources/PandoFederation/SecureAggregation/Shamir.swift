import Foundation

/// t-of-n Shamir secret sharing of short byte strings (32-byte seeds and keys).
///
/// Field: GF(p) with the Mersenne prime p = 2^61 − 1. Why this field:
/// - products fit `UInt64.multipliedFullWidth`, and reduction modulo a Mersenne
///   prime is two shifts, adds and one masked conditional subtraction, so every
///   operation on secret values is branch-free and table-free ("constant-time-ish":
///   no secret-dependent branches or memory indices; the compiler is trusted to keep
///   it that way);
/// - share indices can be any `1...maxIndex` (no 255-party ceiling as with GF(2^8));
/// - no `UInt128`, so it builds for the package's macOS 14 floor.
///
/// A secret of `b` bytes is cut into ⌈b/7⌉ big-endian 7-byte chunks (56 bits < 61),
/// each shared with its own independent random polynomial of degree t − 1; a
/// 32-byte secret becomes 5 field elements, a share is 4 + 2 + 40 bytes on the wire.
/// Any t − 1 shares are independent of the secret (perfect hiding per chunk).
/// Reconstruction interpolates at 0 from t shares and checks every extra share lies
/// on the same polynomial, and that every chunk fits 56 bits, so most corrupted or
/// mixed-up shares are detected rather than silently giving a wrong secret.
public enum Shamir {
    /// The field modulus 2^61 − 1.
    public static let prime: UInt64 = (1 << 61) - 1
    /// Bytes per field element of the secret.
    static let chunkBytes = 7
    /// Largest accepted share index (x-coordinate). Indices are public party numbers.
    public static let maxIndex = Int(UInt32.max)
    /// Largest accepted secret length (keeps the wire length in a UInt16).
    public static let maxSecretBytes = 1024

    /// One party's share: the polynomial values at `index` for every chunk of the secret.
    public struct Share: Sendable, Hashable, Codable {
        /// The x-coordinate, in `1...Shamir.maxIndex` (in secure aggregation: the holder's roster index).
        public var index: Int
        /// Length in bytes of the shared secret.
        public var byteCount: Int
        /// One field element (< p) per 7-byte chunk.
        public var values: [UInt64]

        public init(index: Int, byteCount: Int, values: [UInt64]) {
            self.index = index
            self.byteCount = byteCount
            self.values = values
        }

        /// A share from its parts as a peer sent them, checked like a parsed one (index, count, values < p).
        public init(validating index: Int, byteCount: Int, values: [UInt64]) throws {
            self.init(index: index, byteCount: byteCount, values: values)
            guard values.count == Shamir.elementCount(forBytes: byteCount) else {
                throw ShamirError.malformedShare("\(values.count) values for a \(byteCount)-byte secret")
            }
            try Shamir.validate(self)
        }

        /// Wire form: index (UInt32 BE), byte count (UInt16 BE), values (UInt64 BE each).
        public var serialized: [UInt8] {
            var w = SecAggByteWriter()
            w.append(UInt32(truncatingIfNeeded: index))
            w.append(UInt16(truncatingIfNeeded: byteCount))
            for v in values { w.append(v) }
            return w.bytes
        }

        /// Parses `serialized` and validates ranges.
        public init(serialized bytes: [UInt8]) throws {
            var r = SecAggByteReader(bytes)
            do {
                let index = Int(try r.readUInt32())
                let count = Int(try r.readUInt16())
                let elements = Shamir.elementCount(forBytes: count)
                var values: [UInt64] = []
                values.reserveCapacity(elements)
                for _ in 0..<elements { values.append(try r.readUInt64()) }
                try r.expectEnd()
                self.init(index: index, byteCount: count, values: values)
            } catch is SecAggByteReader.Truncated {
                throw ShamirError.malformedShare("share is \(bytes.count) bytes, truncated or padded")
            }
            try Shamir.validate(self)
        }
    }

    static func elementCount(forBytes n: Int) -> Int { (n + chunkBytes - 1) / chunkBytes }

    // MARK: Splitting

    /// Shares `secret` with threshold `threshold` among parties `1...shareCount`.
    public static func split(secret: [UInt8], threshold: Int, shareCount: Int) throws -> [Share] {
        guard shareCount >= 1 else { throw ShamirError.invalidParameters("shareCount \(shareCount) < 1") }
        return try split(secret: secret, threshold: threshold, indices: Array(1...shareCount))
    }

    /// Shares `secret` so that any `threshold` of the shares at the given distinct `indices`
    /// reconstruct it. Coefficients come from `SystemRandomNumberGenerator` (the OS CSPRNG).
    public static func split(secret: [UInt8], threshold: Int, indices: [Int]) throws -> [Share] {
        var rng = SystemRandomNumberGenerator()
        return try split(secret: secret, threshold: threshold, indices: indices, using: &rng)
    }

    /// As `split(secret:threshold:indices:)` with a caller-supplied generator, which must be
    /// cryptographically secure outside tests.
    public static func split<R: RandomNumberGenerator>(secret: [UInt8], threshold: Int, indices: [Int],
                                                       using rng: inout R) throws -> [Share] {
        guard !secret.isEmpty, secret.count <= maxSecretBytes else {
            throw ShamirError.invalidParameters("secret must be 1...\(maxSecretBytes) bytes, got \(secret.count)")
        }
        guard threshold >= 1 else { throw ShamirError.invalidParameters("threshold \(threshold) < 1") }
        guard threshold <= indices.count else {
            throw ShamirError.invalidParameters("threshold \(threshold) exceeds the \(indices.count) shareholders")
        }
        var seen = Set<Int>()
        for i in indices {
            guard (1...maxIndex).contains(i) else { throw ShamirError.indexOutOfRange(i, allowed: 1...maxIndex) }
            guard seen.insert(i).inserted else { throw ShamirError.duplicateIndex(i) }
        }
        let chunks = chunk(secret)
        // coefficients[c][d]: degree-d coefficient of chunk c's polynomial; d = 0 is the secret.
        var coefficients = chunks.map { [$0] }
        for c in coefficients.indices {
            for _ in 1..<threshold { coefficients[c].append(randomElement(&rng)) }
        }
        return indices.map { i in
            let x = UInt64(i)
            let values = coefficients.map { poly -> UInt64 in
                // Horner from the top coefficient.
                var acc: UInt64 = 0
                for coef in poly.reversed() { acc = Field.add(Field.mul(acc, x), coef) }
                return acc
            }
            return Share(index: i, byteCount: secret.count, values: values)
        }
    }

    // MARK: Reconstruction

    /// Reconstructs the secret from at least `threshold` shares. Uses the `threshold`
    /// lowest-indexed shares and checks every other share against them.
    /// - Parameter maxIndex: the largest index a valid shareholder can have (e.g. n).
    public static func reconstruct(_ shares: [Share], threshold: Int, maxIndex: Int = Shamir.maxIndex) throws -> [UInt8] {
        guard threshold >= 1 else { throw ShamirError.invalidParameters("threshold \(threshold) < 1") }
        guard shares.count >= threshold else { throw ShamirError.tooFewShares(needed: threshold, got: shares.count) }
        let limit = min(maxIndex, Shamir.maxIndex)
        var seen = Set<Int>()
        for s in shares {
            guard (1...max(1, limit)).contains(s.index) else { throw ShamirError.indexOutOfRange(s.index, allowed: 1...max(1, limit)) }
            guard seen.insert(s.index).inserted else { throw ShamirError.duplicateIndex(s.index) }
            try validate(s)
        }
        let byteCount = shares[0].byteCount
        guard shares.allSatisfy({ $0.byteCount == byteCount }) else {
            throw ShamirError.mismatchedShares("shares disagree on the secret length")
        }
        let sorted = shares.sorted { $0.index < $1.index }
        let basis = Array(sorted.prefix(threshold))
        let xs = basis.map { UInt64($0.index) }
        let atZero = lagrangeCoefficients(xs, at: 0)
        let elements = elementCount(forBytes: byteCount)
        var chunks = [UInt64](repeating: 0, count: elements)
        for c in 0..<elements {
            var acc: UInt64 = 0
            for j in basis.indices { acc = Field.add(acc, Field.mul(atZero[j], basis[j].values[c])) }
            chunks[c] = acc
        }
        for extra in sorted.dropFirst(threshold) {
            let lambda = lagrangeCoefficients(xs, at: UInt64(extra.index))
            for c in 0..<elements {
                var acc: UInt64 = 0
                for j in basis.indices { acc = Field.add(acc, Field.mul(lambda[j], basis[j].values[c])) }
                guard acc == extra.values[c] else {
                    throw ShamirError.inconsistentShares("share \(extra.index) does not lie on the polynomial of shares \(xs)")
                }
            }
        }
        return try unchunk(chunks, byteCount: byteCount)
    }

    /// Range checks on one share: index, length, element count and every element < p.
    static func validate(_ s: Share) throws {
        guard (1...maxIndex).contains(s.index) else { throw ShamirError.indexOutOfRange(s.index, allowed: 1...maxIndex) }
        guard (1...maxSecretBytes).contains(s.byteCount) else {
            throw ShamirError.malformedShare("secret length \(s.byteCount) outside 1...\(maxSecretBytes)")
        }
        guard s.values.count == elementCount(forBytes: s.byteCount) else {
            throw ShamirError.malformedShare("\(s.values.count) values for a \(s.byteCount)-byte secret")
        }
        // Branch-free OR of "≥ p" flags, then one public branch.
        var bad: UInt64 = 0
        for v in s.values { bad |= Field.geqPrimeMask(v) }
        guard bad == 0 else { throw ShamirError.valueOutOfRange(index: s.index) }
    }

    /// λ_j(x) = Π_{m≠j} (x − x_m)/(x_j − x_m) for distinct public points `xs`.
    static func lagrangeCoefficients(_ xs: [UInt64], at x: UInt64) -> [UInt64] {
        xs.indices.map { j in
            var num: UInt64 = 1
            var den: UInt64 = 1
            for m in xs.indices where m != j {
                num = Field.mul(num, Field.sub(x, xs[m]))
                den = Field.mul(den, Field.sub(xs[j], xs[m]))
            }
            return Field.mul(num, Field.inverse(den))
        }
    }

    static func randomElement<R: RandomNumberGenerator>(_ rng: inout R) -> UInt64 {
        while true {
            let v = rng.next() & prime  // uniform over 0...2^61 − 1; reject the single value p
            if v != prime { return v }
        }
    }

    static func chunk(_ secret: [UInt8]) -> [UInt64] {
        stride(from: 0, to: secret.count, by: chunkBytes).map { start in
            var v: UInt64 = 0
            for b in secret[start..<min(start + chunkBytes, secret.count)] { v = (v << 8) | UInt64(b) }
            return v
        }
    }

    static func unchunk(_ chunks: [UInt64], byteCount: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(byteCount)
        var overflow: UInt64 = 0
        for (c, v) in chunks.enumerated() {
            let width = min(chunkBytes, byteCount - c * chunkBytes)
            overflow |= v >> UInt64(8 * width)  // a valid chunk has no bits above its width
            for k in stride(from: width - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(8 * k))) }
        }
        guard overflow == 0 else { throw ShamirError.inconsistentShares("reconstructed value is not a \(byteCount)-byte secret") }
        return out
    }

    /// Arithmetic in GF(2^61 − 1); inputs and outputs are canonical (< p).
    enum Field {
        @inline(__always) static func reduceOnce(_ r: UInt64) -> UInt64 {
            // r < 2^62: subtract p unless that borrows, without branching.
            let d = r &- prime
            let keep = UInt64(bitPattern: Int64(bitPattern: d) >> 63)  // all ones iff r < p
            return (r & keep) | (d & ~keep)
        }
        @inline(__always) static func geqPrimeMask(_ v: UInt64) -> UInt64 {
            // all ones iff v ≥ p, for any UInt64 (v ≥ p ⇔ (v + 1) ≥ 2^61 or v overflows).
            let hi = (v &+ 1) >> 61 | (v >> 63)
            return 0 &- ((hi | (hi >> 1) | (hi >> 2)) & 1)
        }
        @inline(__always) static func add(_ a: UInt64, _ b: UInt64) -> UInt64 { reduceOnce(a &+ b) }
        @inline(__always) static func sub(_ a: UInt64, _ b: UInt64) -> UInt64 { reduceOnce(a &+ (prime &- b)) }
        @inline(__always) static func mul(_ a: UInt64, _ b: UInt64) -> UInt64 {
            let (hi, lo) = a.multipliedFullWidth(by: b)
            // a·b = hi·2^64 + lo ≡ 8·hi + (lo >> 61) + (lo & p)   (2^61 ≡ 1)
            let x = (lo & prime) &+ (lo >> 61) &+ (hi << 3)
            return reduceOnce((x & prime) &+ (x >> 61))
        }
        /// a^(p−2) by square-and-multiply over the fixed public exponent.
        static func inverse(_ a: UInt64) -> UInt64 {
            var result: UInt64 = 1
            var base = a
            var e = prime - 2
            while e > 0 {
                let m = mul(result, base)
                result = (e & 1) == 1 ? m : result
                base = mul(base, base)
                e >>= 1
            }
            return result
        }
    }
}

/// Why a sharing or reconstruction was refused.
public enum ShamirError: Error, Equatable, CustomStringConvertible {
    case invalidParameters(String)
    case tooFewShares(needed: Int, got: Int)
    case duplicateIndex(Int)
    case indexOutOfRange(Int, allowed: ClosedRange<Int>)
    case valueOutOfRange(index: Int)
    case malformedShare(String)
    case mismatchedShares(String)
    case inconsistentShares(String)

    public var description: String {
        switch self {
        case .invalidParameters(let m): return "Shamir: invalid parameters: \(m)"
        case .tooFewShares(let needed, let got): return "Shamir: need \(needed) shares to reconstruct, got \(got)"
        case .duplicateIndex(let i): return "Shamir: share index \(i) appears more than once"
        case .indexOutOfRange(let i, let r): return "Shamir: share index \(i) outside \(r.lowerBound)...\(r.upperBound)"
        case .valueOutOfRange(let i): return "Shamir: share \(i) holds a value outside the field (≥ 2^61 − 1)"
        case .malformedShare(let m): return "Shamir: malformed share: \(m)"
        case .mismatchedShares(let m): return "Shamir: mismatched shares: \(m)"
        case .inconsistentShares(let m): return "Shamir: inconsistent shares: \(m)"
        }
    }
}
