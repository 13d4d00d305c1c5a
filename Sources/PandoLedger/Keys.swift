import Crypto
import Foundation

/// Errors from the ledger: the state folder, keys, versions, rounds.
public struct LedgerError: Error, CustomStringConvertible, Equatable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// SHA-256 helpers; every id in the ledger is a lower-case hex SHA-256.
public enum Digest {
    /// Hex SHA-256 of `data`.
    public static func sha256(_ data: Data) -> String { hex(SHA256.hash(data: data)) }

    /// Hex SHA-256 of bytes in memory, hashed in place (e.g. a model-sized
    /// update buffer, without copying it into a `Data`).
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> String { hex(SHA256.hash(data: bytes)) }

    /// Hex SHA-256 of a file, streamed in 1 MiB chunks (weights can be large).
    public static func sha256(fileAt url: URL) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: url.path) else { throw LedgerError("\(url.path): cannot open") }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hex(hasher.finalize())
    }

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// True when `s` looks like a hex SHA-256 (64 lower-case hex digits).
    public static func isSHA256(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// 64 zeros: the `prev` of the first record in a chain.
    public static let zero = String(repeating: "0", count: 64)
}

/// A private key that signs the records of a signed, hash-chained log.
public protocol RecordSigner {
    func sign(_ data: Data) throws -> Data
}

/// The coordinator's Ed25519 signing key for audit records.
///
/// Stored as one line of base64 (the 32-byte raw private key) in a file with
/// mode 0600; loading refuses a file readable by group or others. The key never
/// appears in `description`, logs or errors; only its public key and the
/// public key's fingerprint are shown.
public struct CoordinatorSigningKey: RecordSigner, Sendable, CustomStringConvertible {
    let privateKey: Curve25519.Signing.PrivateKey

    /// A fresh random key (not saved).
    public init() { privateKey = Curve25519.Signing.PrivateKey() }

    init(privateKey: Curve25519.Signing.PrivateKey) { self.privateKey = privateKey }

    /// The verifying half, for officers.
    public var publicKey: AuditPublicKey { AuditPublicKey(key: privateKey.publicKey) }

    public var description: String { "CoordinatorSigningKey(public \(publicKey.fingerprint))" }

    /// Ed25519 signature over `data`.
    public func sign(_ data: Data) throws -> Data { try privateKey.signature(for: data) }

    /// Writes the private key to `url` (created with mode 0600, never
    /// overwritten) and the public key beside it as `<name>.pub`.
    public func save(to url: URL) throws {
        try PrivateFiles.folder(url.deletingLastPathComponent())
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw LedgerError("\(url.path): cannot create key file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        fchmod(fd, 0o600)
        let line = Array((privateKey.rawRepresentation.base64EncodedString() + "\n").utf8)
        guard line.withUnsafeBytes({ Foundation.write(fd, $0.baseAddress, $0.count) }) == line.count, fsync(fd) == 0 else {
            throw LedgerError("\(url.path): cannot write key file")
        }
        try publicKey.save(to: url.appendingPathExtension("pub"))
    }

    /// Loads a key saved by `save(to:)`.
    public static func load(from url: URL) throws -> CoordinatorSigningKey {
        var info = stat()
        guard stat(url.path, &info) == 0 else { throw LedgerError("\(url.path): no signing key (the coordinator creates one when it starts a new state folder)") }
        guard info.st_mode & 0o077 == 0 else {
            throw LedgerError("\(url.path): signing key is readable by group or others (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600")
        }
        let text = try String(contentsOf: url, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let raw = Data(base64Encoded: text), let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw LedgerError("\(url.path): not an Ed25519 private key")
        }
        return CoordinatorSigningKey(privateKey: key)
    }

}

/// A public key that checks the signatures of a signed, hash-chained log: the coordinator's
/// Ed25519 key for `audit.jsonl`, the district CA's P-256 key for `ca-events.jsonl`.
public protocol RecordVerifyingKey: Sendable {
    /// First 16 hex digits of `sha256`, to name the key in reports.
    var fingerprint: String { get }
    /// Hex SHA-256 of the key's raw bytes.
    var sha256: String { get }
    func isValid(signature: Data, for data: Data) -> Bool
}

/// The coordinator's Ed25519 public key, as an officer holds it.
/// File format: one line, base64 of the 32 raw bytes (hex is also accepted).
public struct AuditPublicKey: RecordVerifyingKey, Equatable {
    let key: Curve25519.Signing.PublicKey

    init(key: Curve25519.Signing.PublicKey) { self.key = key }

    public static func == (a: AuditPublicKey, b: AuditPublicKey) -> Bool { a.key.rawRepresentation == b.key.rawRepresentation }

    /// Base64 of the raw 32 bytes.
    public var base64: String { key.rawRepresentation.base64EncodedString() }

    /// First 16 hex digits of the SHA-256 of the raw key, to name it in reports.
    public var fingerprint: String { String(sha256.prefix(16)) }

    /// Hex SHA-256 of the raw 32 bytes, as a `signingKeyReplaced` record names the new key.
    public var sha256: String { Digest.sha256(key.rawRepresentation) }

    /// True when `signature` is this key's Ed25519 signature of `data`.
    public func isValid(signature: Data, for data: Data) -> Bool { key.isValidSignature(signature, for: data) }

    /// Parses base64 or hex text.
    public init(text: String) throws {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var raw = Data(base64Encoded: t)
        if t.count == 64, let bytes = Self.hexBytes(t) { raw = bytes }
        guard let raw, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            throw LedgerError("not an Ed25519 public key (expected base64 or hex of 32 bytes)")
        }
        self.key = key
    }

    /// Reads a public key file.
    public static func load(from url: URL) throws -> AuditPublicKey {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch { throw LedgerError("\(url.path): cannot read public key") }
        do { return try AuditPublicKey(text: text) } catch { throw LedgerError("\(url.path): \(error)") }
    }

    /// Writes the key (world-readable; it is public).
    public func save(to url: URL) throws {
        try Data((base64 + "\n").utf8).write(to: url, options: .atomic)
    }

    private static func hexBytes(_ s: String) -> Data? {
        var out = Data()
        var it = s.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            guard let v = UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) else { return nil }
            out.append(v)
        }
        return out
    }
}

/// The district CA's ECDSA P-256 public key (from `ca.pem`), which checks the CA's own log
/// of certificate events (`ca-events.jsonl`); signatures are DER, over SHA-256.
public struct CAPublicKey: RecordVerifyingKey {
    let key: P256.Signing.PublicKey

    /// The key from its X9.63 (uncompressed point) bytes.
    public init(x963: Data) throws {
        do { key = try P256.Signing.PublicKey(x963Representation: x963) } catch {
            throw LedgerError("not a P-256 public key")
        }
    }

    public var sha256: String { Digest.sha256(key.x963Representation) }
    public var fingerprint: String { String(sha256.prefix(16)) }

    public func isValid(signature: Data, for data: Data) -> Bool {
        guard let s = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
        return key.isValidSignature(s, for: data)
    }
}
