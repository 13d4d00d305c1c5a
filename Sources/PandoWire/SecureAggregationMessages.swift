import Foundation

// Secure aggregation (Bonawitz et al. 2017; SecAgg+ neighbour graphs, Bell et al. 2020) on
// the wire. A training assignment that carries a `SecureAggregationSetup` runs four extra
// exchanges between the school and the coordinator, which relays and sums but never sees
// one school's update:
//
//     assignment(setup) → secAggKeys → secAggKeyBundle → secAggShares → … local training …
//     → secAggShareDelivery → masked update (object transfer) + roundResult
//     → secAggUnmask → secAggReveal
//
// The sender of every client message is the school its TLS certificate names; messages
// carry no sender field a peer could fill in. Every message names its round (and, from the
// school, the assignment's nonce) so it can only answer the exchange it was made for.

/// An X25519 public key: exactly 32 bytes (hex in JSON). Key material, never text.
public struct WireKey: Codable, Sendable, Hashable {
    public let bytes: [UInt8]
    public init?(_ bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }
    public init?(_ data: Data) { self.init(Array(data)) }
    public var data: Data { Data(bytes) }

    public init(from decoder: Decoder) throws {
        let hex = try decoder.singleValueContainer().decode(String.self)
        guard let d = ObjectDigest(hex: hex) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a 32-byte hex key"))
        }
        bytes = d.bytes
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(ObjectDigest(bytes: bytes)!.hex)
    }
}

/// One school's two Shamir shares for one peer, sealed with ChaCha20-Poly1305 under a key
/// only the two schools agree on: exactly `byteCount` bytes (nonce, two 50-byte length-prefixed
/// shares of 32-byte secrets, tag), base64 in JSON. Its size is fixed by the protocol, so it
/// cannot carry anything else; the coordinator cannot open it.
public struct WireSealedShares: Codable, Sendable, Hashable {
    public static let byteCount = 12 + 2 * (4 + 46) + 16
    public let bytes: [UInt8]
    public init?(_ data: Data) {
        guard data.count == Self.byteCount else { return nil }
        bytes = Array(data)
    }
    public var data: Data { Data(bytes) }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard text.utf8.count <= 4 * Self.byteCount, let d = Data(base64Encoded: text), d.count == Self.byteCount else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not \(Self.byteCount) bytes of base64"))
        }
        bytes = Array(d)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(Data(bytes).base64EncodedString())
    }
}

/// What every school of a secure-aggregation round must agree on, sent in the assignment.
public struct SecureAggregationSetup: Codable, Sendable, Equatable {
    /// The schools invited, in canonical (UTF-8 byte) order; share index = position + 1.
    public var roster: [WireToken]
    /// t: shares needed to rebuild one school's self-mask seed or masking key.
    public var threshold: UInt32
    /// Fewest masked inputs the coordinator may unmask (and a school accepts in an unmasking request).
    public var minimumSurvivors: UInt32
    /// SecAgg+ neighbour count k; nil: every pair of schools (the complete graph).
    public var neighbours: UInt32?
    /// Public randomness for the neighbour graph (32 bytes, hex).
    public var roundSeed: ObjectDigest
    /// Fixed point: values clipped to [−clip, clip], scaled by `scale`, weights capped at `maxWeight`.
    public var clip: Double
    public var scale: Double
    public var maxWeight: UInt32
    /// Values per school (the trained tensors); masked inputs carry one more word, the weight.
    public var vectorLength: UInt64

    public init(roster: [WireToken], threshold: UInt32, minimumSurvivors: UInt32, neighbours: UInt32?, roundSeed: ObjectDigest,
                clip: Double, scale: Double, maxWeight: UInt32, vectorLength: UInt64) {
        self.roster = roster
        self.threshold = threshold
        self.minimumSurvivors = minimumSurvivors
        self.neighbours = neighbours
        self.roundSeed = roundSeed
        self.clip = clip
        self.scale = scale
        self.maxWeight = maxWeight
        self.vectorLength = vectorLength
    }

    /// Most schools one secure round may invite (every list in these messages is bounded by it).
    public static let maxRoster = 256
}

/// School → coordinator: the two X25519 public keys it uses this round (raw, 32 bytes each).
public struct SecAggKeys: Codable, Sendable, Equatable {
    public var round: UInt64
    public var nonce: WireToken
    public var encryptionKey: WireKey
    public var maskingKey: WireKey
    public init(round: UInt64, nonce: WireToken, encryptionKey: WireKey, maskingKey: WireKey) {
        self.round = round
        self.nonce = nonce
        self.encryptionKey = encryptionKey
        self.maskingKey = maskingKey
    }
}

/// One school's advertised keys as the coordinator relays them.
public struct SecAggPeerKeys: Codable, Sendable, Equatable {
    public var school: WireToken
    public var encryptionKey: WireKey
    public var maskingKey: WireKey
    public init(school: WireToken, encryptionKey: WireKey, maskingKey: WireKey) {
        self.school = school
        self.encryptionKey = encryptionKey
        self.maskingKey = maskingKey
    }
}

/// Coordinator → school: the keys of its neighbours that advertised.
public struct SecAggKeyBundleMessage: Codable, Sendable, Equatable {
    public var round: UInt64
    public var keys: [SecAggPeerKeys]
    public init(round: UInt64, keys: [SecAggPeerKeys]) {
        self.round = round
        self.keys = keys
    }
}

/// One sealed pair of Shamir shares (ChaCha20-Poly1305, key agreed with the peer); `peer` is
/// the receiver when a school sends it and the sender when the coordinator delivers it.
public struct SecAggSealedShares: Codable, Sendable, Equatable {
    public var peer: WireToken
    public var sealed: WireSealedShares
    public init(peer: WireToken, sealed: WireSealedShares) {
        self.peer = peer
        self.sealed = sealed
    }
}

/// School → coordinator: its shares, one envelope per neighbour.
public struct SecAggShares: Codable, Sendable, Equatable {
    public var round: UInt64
    public var nonce: WireToken
    public var envelopes: [SecAggSealedShares]
    public init(round: UInt64, nonce: WireToken, envelopes: [SecAggSealedShares]) {
        self.round = round
        self.nonce = nonce
        self.envelopes = envelopes
    }
}

/// Coordinator → school: the envelopes its neighbours that shared addressed to it.
public struct SecAggShareDelivery: Codable, Sendable, Equatable {
    public var round: UInt64
    public var envelopes: [SecAggSealedShares]
    public init(round: UInt64, envelopes: [SecAggSealedShares]) {
        self.round = round
        self.envelopes = envelopes
    }
}

/// Coordinator → surviving school: whose self-mask shares (survivors) and whose masking-key
/// shares (dropped after sharing) to reveal.
public struct SecAggUnmask: Codable, Sendable, Equatable {
    public var round: UInt64
    public var survivors: [WireToken]
    public var dropped: [WireToken]
    public init(round: UInt64, survivors: [WireToken], dropped: [WireToken]) {
        self.round = round
        self.survivors = survivors
        self.dropped = dropped
    }
}

/// One revealed share of `owner`'s self-mask seed or masking key (a 32-byte secret): the
/// share's x-coordinate and its field elements (< 2^61 − 1, one per 7 bytes of the secret).
public struct SecAggRevealed: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case selfMaskSeed = "self-mask-seed", maskingKey = "masking-key" }
    public var owner: WireToken
    public var kind: Kind
    public var index: UInt32
    public var values: [UInt64]
    public init(owner: WireToken, kind: Kind, index: UInt32, values: [UInt64]) {
        self.owner = owner
        self.kind = kind
        self.index = index
        self.values = values
    }
    /// Field elements of a share of a 32-byte secret.
    public static let valueCount = 5
}

/// School → coordinator: the shares it agreed to reveal.
public struct SecAggReveal: Codable, Sendable, Equatable {
    public var round: UInt64
    public var nonce: WireToken
    public var shares: [SecAggRevealed]
    public init(round: UInt64, nonce: WireToken, shares: [SecAggRevealed]) {
        self.round = round
        self.nonce = nonce
        self.shares = shares
    }
}

extension WireMessage {
    /// Bounds of the secure-aggregation messages (called from `validate`); key and ciphertext
    /// sizes are exact by their types.
    func validateSecureAggregation(_ fail: (String) -> WireError) throws {
        let maxList = SecureAggregationSetup.maxRoster
        switch self {
        case .roundAssignment(let a):
            guard let s = a.secureAggregation else { return }
            if s.roster.isEmpty || s.roster.count > maxList { throw fail("roster of \(s.roster.count) schools (1…\(maxList))") }
            if !(s.clip.isFinite && s.clip > 0 && s.scale.isFinite && s.scale > 0) { throw fail("clip and scale must be positive and finite") }
            if s.vectorLength == 0 || s.vectorLength > 1 << 32 { throw fail("vector length outside 1…2^32") }
        case .secAggKeyBundle(let b):
            if b.keys.count > maxList { throw fail("more than \(maxList) keys") }
        case .secAggShares(let s):
            if s.envelopes.count > maxList { throw fail("more than \(maxList) envelopes") }
        case .secAggShareDelivery(let d):
            if d.envelopes.count > maxList { throw fail("more than \(maxList) envelopes") }
        case .secAggUnmask(let u):
            if u.survivors.count + u.dropped.count > maxList { throw fail("more than \(maxList) schools") }
        case .secAggReveal(let r):
            if r.shares.count > maxList { throw fail("more than \(maxList) shares") }
            if r.shares.contains(where: { $0.values.count != SecAggRevealed.valueCount }) {
                throw fail("a share without exactly \(SecAggRevealed.valueCount) values")
            }
        default:
            return
        }
    }
}
