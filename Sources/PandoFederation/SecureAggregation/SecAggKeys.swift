import Crypto
import Foundation

/// What every derived key and sealed message is bound to: one round of one federation, and the
/// digest of the round's setup as each school received it. Schools given different setups (say a
/// tiny fixed-point scale for all but one, which would leave that one's input alone in the sum)
/// then derive different keys: their shares do not open and their masks do not cancel.
public struct SecAggContext: Sendable, Hashable, Codable {
    public var federationID: String
    public var round: UInt64
    /// The setup's digest (empty: not bound, as in the protocol's unit tests and benchmarks).
    public var setup: [UInt8]

    public init(federationID: String, round: UInt64, setup: [UInt8] = []) {
        self.federationID = federationID
        self.round = round
        self.setup = setup
    }

    /// Adds the setup digest to a derivation or associated data, when there is one.
    func bindSetup(_ w: inout SecAggByteWriter) {
        if !setup.isEmpty { w.append(lengthPrefixed: setup) }
    }
}

/// What a school advertises for one round: two X25519 public keys (raw 32 bytes each),
/// one for sealing shares to peers and one for pairwise masks. The network layer should
/// sign `transcript` with the school's certificate key so a coordinator cannot substitute
/// keys (the active-adversary variant of Bonawitz et al.).
public struct SecAggPublicKeys: Sendable, Hashable, Codable {
    public var school: String
    public var encryptionKey: Data
    public var maskingKey: Data

    public init(school: String, encryptionKey: Data, maskingKey: Data) {
        self.school = school
        self.encryptionKey = encryptionKey
        self.maskingKey = maskingKey
    }

    /// Canonical bytes to sign: domain, context, school, both keys.
    public func transcript(_ context: SecAggContext) -> [UInt8] {
        var w = SecAggByteWriter()
        w.append(raw: Array("pando-secagg-v1/advertise".utf8))
        w.append(string: context.federationID)
        w.append(context.round)
        context.bindSetup(&w)
        w.append(string: school)
        w.append(lengthPrefixed: Array(encryptionKey))
        w.append(lengthPrefixed: Array(maskingKey))
        return w.bytes
    }

    /// SHA-256 (hex) of encryption key ‖ masking key: what the audit and the school's log record.
    public static func fingerprint(encryptionKey: Data, maskingKey: Data) -> String {
        var h = SHA256()
        h.update(data: encryptionKey)
        h.update(data: maskingKey)
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    public var fingerprint: String { Self.fingerprint(encryptionKey: encryptionKey, maskingKey: maskingKey) }

    /// Both keys parse as X25519 points and differ from each other.
    func validated() throws -> (encryption: Curve25519.KeyAgreement.PublicKey, masking: Curve25519.KeyAgreement.PublicKey) {
        guard encryptionKey.count == 32, maskingKey.count == 32 else {
            throw SecAggError.malformed("public keys of \(school) must be 32 bytes each")
        }
        guard encryptionKey != maskingKey else { throw SecAggError.keyReuse("\(school) advertised the same key twice") }
        let keys: (encryption: Curve25519.KeyAgreement.PublicKey, masking: Curve25519.KeyAgreement.PublicKey)
        do {
            keys = (try .init(rawRepresentation: encryptionKey), try .init(rawRepresentation: maskingKey))
        } catch {
            throw SecAggError.malformed("public keys of \(school) are not X25519 keys")
        }
        // A low-order point gives every agreement with it the all-zero secret, which anyone can
        // derive: the pairwise masks and sealed shares with that school would be public. Refused
        // here, at the coordinator, before any school uses it.
        // (BoringSSL may return the all-zero secret rather than fail: both are refused.)
        let probe = Curve25519.KeyAgreement.PrivateKey()
        for key in [keys.encryption, keys.masking] {
            let secret = try? probe.sharedSecretFromKeyAgreement(with: key)
            guard let secret, secret.withUnsafeBytes({ $0.contains { $0 != 0 } }) else {
                throw SecAggError.malformed("a public key of \(school) is a low-order point (its key agreements give no secret)")
            }
        }
        return keys
    }
}

/// A school's two fresh per-round X25519 key pairs. Never reused across rounds.
public struct SecAggKeyPairs: Sendable {
    public let encryption: Curve25519.KeyAgreement.PrivateKey
    public let masking: Curve25519.KeyAgreement.PrivateKey

    public init() {
        encryption = .init()
        masking = .init()
    }

    public func publicKeys(school: String) -> SecAggPublicKeys {
        SecAggPublicKeys(school: school, encryptionKey: encryption.publicKey.rawRepresentation,
                         maskingKey: masking.publicKey.rawRepresentation)
    }
}

/// HKDF-SHA256 derivation of pairwise symmetric keys from X25519 agreements.
public enum SecAggKDF {
    /// What a derived key is for; part of the HKDF info, so the two never coincide.
    public enum Purpose: String, Sendable { case shareEncryption = "share-encryption", pairwiseMask = "pairwise-mask" }

    /// The 32-byte key shared by `me` and `peer`: HKDF-SHA256 over X25519(myKey, peerKey),
    /// info = domain ‖ purpose ‖ federation ‖ round ‖ (lower id, its key) ‖ (higher id, its key),
    /// with the ids in canonical (UTF-8 byte) order so both sides derive the same key.
    public static func pairwiseKey(myKey: Curve25519.KeyAgreement.PrivateKey, me: String,
                                   peerKey: Curve25519.KeyAgreement.PublicKey, peer: String,
                                   context: SecAggContext, purpose: Purpose) throws -> SymmetricKey {
        guard me != peer else { throw SecAggError.malformed("pairwise key of \(me) with itself") }
        let shared: SharedSecret
        do {
            shared = try myKey.sharedSecretFromKeyAgreement(with: peerKey)
        } catch {
            throw SecAggError.malformed("key agreement of \(me) with \(peer) failed (low-order key?)")
        }
        let mine = (me, Array(myKey.publicKey.rawRepresentation))
        let theirs = (peer, Array(peerKey.rawRepresentation))
        let (low, high) = SecAggRoster.precedes(me, peer) ? (mine, theirs) : (theirs, mine)
        var w = SecAggByteWriter()
        w.append(raw: Array("pando-secagg-v1/".utf8))
        w.append(string: purpose.rawValue)
        w.append(string: context.federationID)
        w.append(context.round)
        context.bindSetup(&w)
        w.append(string: low.0)
        w.append(lengthPrefixed: low.1)
        w.append(string: high.0)
        w.append(lengthPrefixed: high.1)
        return shared.hkdfDerivedSymmetricKey(using: SHA256.self, salt: Array("pando-secagg-v1".utf8),
                                              sharedInfo: w.bytes, outputByteCount: 32)
    }
}

/// The two shares school `sender` gives school `receiver`, sealed with ChaCha20-Poly1305
/// under their share-encryption key. The cleartext header is for routing only: the
/// associated data is rebuilt from what the receiver expects, so a changed header, a
/// replay into another round or a redirect to another school fails authentication.
public struct SecAggShareEnvelope: Sendable, Hashable, Codable {
    public var sender: String
    public var receiver: String
    public var context: SecAggContext
    /// ChaCha20-Poly1305 combined form: nonce ‖ ciphertext ‖ tag.
    public var sealed: Data

    public init(sender: String, receiver: String, context: SecAggContext, sealed: Data) {
        self.sender = sender
        self.receiver = receiver
        self.context = context
        self.sealed = sealed
    }

    static func associatedData(sender: String, receiver: String, context: SecAggContext) -> [UInt8] {
        var w = SecAggByteWriter()
        w.append(raw: Array("pando-secagg-v1/share-envelope".utf8))
        w.append(string: context.federationID)
        w.append(context.round)
        context.bindSetup(&w)
        w.append(string: sender)
        w.append(string: receiver)
        return w.bytes
    }

    /// Seals the receiver's share of the sender's self-mask seed and of its masking key.
    static func seal(selfSeedShare: Shamir.Share, maskKeyShare: Shamir.Share, sender: String, receiver: String,
                     context: SecAggContext, key: SymmetricKey) throws -> SecAggShareEnvelope {
        var w = SecAggByteWriter()
        w.append(lengthPrefixed: selfSeedShare.serialized)
        w.append(lengthPrefixed: maskKeyShare.serialized)
        let ad = associatedData(sender: sender, receiver: receiver, context: context)
        let box = try ChaChaPoly.seal(w.bytes, using: key, authenticating: ad)
        return SecAggShareEnvelope(sender: sender, receiver: receiver, context: context, sealed: box.combined)
    }

    /// Opens an envelope the receiver expects from `expectedSender`; returns (self-seed share,
    /// mask-key share), both checked to be at `receiverIndex` and 32 bytes long.
    func open(expectedSender: String, receiver: String, receiverIndex: Int, context: SecAggContext,
              key: SymmetricKey) throws -> (selfSeed: Shamir.Share, maskKey: Shamir.Share) {
        guard sender == expectedSender, self.receiver == receiver, self.context == context else {
            throw SecAggError.contextMismatch("envelope \(sender)→\(self.receiver) round \(self.context.round) "
                + "where \(expectedSender)→\(receiver) round \(context.round) was expected")
        }
        let plain: Data
        do {
            let box = try ChaChaPoly.SealedBox(combined: sealed)
            plain = try ChaChaPoly.open(box, using: key,
                                        authenticating: Self.associatedData(sender: expectedSender, receiver: receiver, context: context))
        } catch {
            throw SecAggError.decryptionFailed(sender: expectedSender, receiver: receiver)
        }
        var r = SecAggByteReader(Array(plain))
        let a: Shamir.Share, b: Shamir.Share
        do {
            a = try Shamir.Share(serialized: try r.readLengthPrefixed(max: 4096))
            b = try Shamir.Share(serialized: try r.readLengthPrefixed(max: 4096))
            try r.expectEnd()
        } catch {
            throw SecAggError.malformed("shares from \(expectedSender) do not parse: \(error)")
        }
        for s in [a, b] where s.index != receiverIndex || s.byteCount != 32 {
            throw SecAggError.malformed("share from \(expectedSender) is for index \(s.index) (\(s.byteCount) bytes), expected \(receiverIndex)")
        }
        return (a, b)
    }
}
