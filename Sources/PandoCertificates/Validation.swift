import Crypto
import Foundation
import SwiftASN1
import X509

/// The certificate the TLS layer verified: the first of the chain the peer presented.
///
/// BoringSSL checks the peer's handshake signature against the public key of the *first*
/// certificate it was sent, so that certificate, and only that one, is the peer's
/// identity. If it cannot be parsed (swift-certificates refuses, for example, RSA keys
/// under 2048 bits, which BoringSSL takes), the connection is refused: skipping it and
/// validating the next certificate would let anyone holding a copy of a school's
/// certificate — no key — log in as that school. Pando issues P-256 ECDSA certificates
/// only (`pando certs`), so any other key type or signature algorithm is refused as well.
public enum PeerLeaf {
    /// Peers may send the CA (or, in other PKIs, intermediates) after the leaf; more than this is refused unread.
    public static let maxChainLength = 4

    /// The parsed leaf of `presented` (DER, leaf first), or the reason it is refused.
    public static func parse(_ presented: [[UInt8]], role: String) -> Result<Certificate, PeerRefusal> {
        guard let der = presented.first else {
            return .failure(PeerRefusal(kind: .noCertificate, reason: "the \(role) presented no certificate"))
        }
        guard presented.count <= maxChainLength else {
            return .failure(PeerRefusal(kind: .malformedChain,
                                        reason: "the \(role) presented \(presented.count) certificates (at most \(maxChainLength) are read)"))
        }
        let leaf: Certificate
        do { leaf = try Certificate(derEncoded: der) } catch {
            return .failure(PeerRefusal(kind: .unparseableLeaf,
                                        reason: "the \(role)'s certificate (the first of its chain, whose key signed the TLS handshake) "
                                            + "cannot be parsed (\(untrusted("\(error)"))); Pando certificates are P-256 ECDSA"))
        }
        guard P256.Signing.PublicKey(leaf.publicKey) != nil else {
            return .failure(PeerRefusal(kind: .wrongKeyType,
                                        reason: "the \(role)'s certificate \(untrusted("\(leaf.subject)")) has a key that is not P-256 ECDSA "
                                            + "(Pando issues only P-256 certificates)"))
        }
        guard leaf.signatureAlgorithm == .ecdsaWithSHA256 else {
            return .failure(PeerRefusal(kind: .wrongKeyType,
                                        reason: "the \(role)'s certificate \(untrusted("\(leaf.subject)")) is signed with "
                                            + "\(untrusted("\(leaf.signatureAlgorithm)")), not ECDSA with SHA-256"))
        }
        return .success(leaf)
    }
}

/// Why a peer's certificate was refused, with a category for counting and auditing.
public struct PeerRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case noCertificate, malformedChain, unparseableLeaf, wrongKeyType
        case unknownIssuer, expired, notYetValid, wrongUsage, noIdentity, revoked, revocationUnavailable
        /// The TLS handshake failed before any certificate was judged (no common version or algorithm, bad signature …).
        case tlsHandshake
    }
    public var kind: Kind
    public var reason: String
    public init(kind: Kind, reason: String) {
        self.kind = kind
        self.reason = reason
    }
    public var description: String { reason }
}

/// A CRL file re-read whenever it changes on disk (checked on every handshake by size +
/// modification time + inode), so `pando certs revoke` takes effect for the next connection
/// without a restart.
///
/// - A file that fails to parse or verify is ignored in favour of the last good list.
/// - Replay: the highest CRL number accepted so far is remembered, and a list with a lower
///   number (an older `crl.pem` copied back, which would un-revoke certificates) is refused
///   in favour of the last good list. With `numberFile` the number survives restarts: it is
///   kept there (with the CA it belongs to) and read back on start, so a restarted process
///   refuses an older list too (with nothing newer to fall back on: no list, fail closed).
/// - Staleness: a list past its `nextUpdate` may be missing newer revocations. With
///   ``StalePolicy/refuse`` (the coordinator) it yields no list, so every school is refused
///   until a fresh CRL is published (`pando certs refresh-crl`): fail closed. With
///   ``StalePolicy/warn`` (a school, which cannot fetch a newer list itself) the entries are
///   still applied and a warning is reported.
///
/// Every problem is passed to `report` once when it first appears (not on every handshake).
public final class RevocationListFile: @unchecked Sendable {
    public enum StalePolicy: Sendable { case refuse, warn }

    public let path: String
    public let stalePolicy: StalePolicy
    /// Where the highest CRL number accepted is kept across restarts (nil: memory only).
    public let numberFile: String?
    private let caCertificate: Certificate
    private let report: (@Sendable (String) -> Void)?
    private let lock = NSLock()
    private var stamp: [Int64]? = nil
    private var cached: RevocationList? = nil
    private var highestNumber = 0
    /// Why `numberFile` could not be read: every list is refused until it is fixed.
    private var numberFileError: String? = nil
    private var lastError: String? = nil
    private var lastReported: String? = nil

    /// Warn this long before `nextUpdate`.
    public static let expiryWarning: TimeInterval = 30 * 86400

    /// - Parameter numberFile: a file of the process's own state (the coordinator's state
    ///   folder, a school's cache) that keeps the highest CRL number seen; written
    ///   atomically, mode 0600.
    public init(path: String, caCertificate: Certificate, stalePolicy: StalePolicy = .refuse,
                numberFile: String? = nil, report: (@Sendable (String) -> Void)? = nil) {
        self.path = path
        self.caCertificate = caCertificate
        self.stalePolicy = stalePolicy
        self.numberFile = numberFile
        self.report = report
        if let numberFile {
            do { highestNumber = try CRLNumberFile.read(numberFile, caCertificate: caCertificate) ?? 0 } catch {
                numberFileError = "\(error)"
            }
        }
    }

    /// The list to apply, or `nil` (refuse: the warning says why).
    /// `warning` is set when the file changed but the new content was rejected, or the list is (nearly) stale.
    public func current(now: Date = Date()) -> (list: RevocationList?, warning: String?) {
        lock.lock()
        let result = load(now: now)
        let toReport: String?
        if let w = result.warning, w != lastReported { toReport = w } else { toReport = nil }
        lastReported = result.warning
        lock.unlock()
        if let toReport { report?(toReport) }
        return result
    }

    private func load(now: Date) -> (list: RevocationList?, warning: String?) {
        if let numberFileError { return (nil, numberFileError) }
        var st = stat()
        guard stat(path, &st) == 0 else {
            cached = nil
            stamp = nil
            lastError = "revocation list \(path) is missing"
            return (nil, lastError)
        }
        let newStamp: [Int64] = [Int64(st.st_size), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec), Int64(st.st_ino)]
        if newStamp != stamp {
            stamp = newStamp
            do {
                let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
                let list = try RevocationList(verifying: bytes, caCertificate: caCertificate)
                if list.number < highestNumber {
                    lastError = "revocation list \(path) has CRL number \(list.number), older than number \(highestNumber) already seen "
                        + "(an old crl.pem was put back?); refusing it and keeping the newer list"
                } else {
                    cached = list
                    lastError = nil
                    if list.number > highestNumber, let numberFile {
                        do { try CRLNumberFile.write(list.number, to: numberFile, caCertificate: caCertificate) } catch {
                            lastError = "\(error): after a restart an older crl.pem than number \(list.number) would not be refused"
                        }
                    }
                    highestNumber = list.number
                }
            } catch {
                lastError = "revocation list \(path) rejected (\(error))" + (cached == nil ? "" : "; keeping the previous list")
            }
        }
        guard let list = cached else { return (nil, lastError ?? "no revocation list") }
        if now > list.nextUpdate {
            let stale = "revocation list \(path) (CRL number \(list.number)) is stale: its nextUpdate \(Self.iso(list.nextUpdate)) has passed; "
                + "publish a fresh one with `pando certs refresh-crl`"
            switch stalePolicy {
            case .refuse: return (nil, stale + " (refusing school connections until then)")
            case .warn: return (list, [lastError, stale + " (still applying its entries)"].compactMap { $0 }.joined(separator: "; "))
            }
        }
        if now.addingTimeInterval(Self.expiryWarning) > list.nextUpdate {
            let soon = "revocation list \(path) expires at \(Self.iso(list.nextUpdate)); publish a fresh one with `pando certs refresh-crl`"
            return (list, [lastError, soon].compactMap { $0 }.joined(separator: "; "))
        }
        return (list, lastError)
    }

    static func iso(_ d: Date) -> String { ISO8601DateFormatter().string(from: d) }
}

/// The highest CRL number a coordinator or school has accepted, kept in a small JSON file
/// `{"ca": <hex SHA-256 of the CA certificate>, "crlNumber": N}`. A number recorded for
/// another CA (the district made a new one, whose CRLs count from 1 again) does not apply.
enum CRLNumberFile {
    struct Content: Codable {
        var ca: String
        var crlNumber: Int
    }

    static func caID(_ ca: Certificate) -> String {
        var serializer = DER.Serializer()
        try? serializer.serialize(ca)
        return SHA256.hash(data: serializer.serializedBytes).map { String(format: "%02x", $0) }.joined()
    }

    /// The recorded number for this CA; nil when there is no file (a new state) or it names another CA.
    static func read(_ path: String, caCertificate: Certificate) throws -> Int? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let content: Content
        do { content = try JSONDecoder().decode(Content.self, from: Data(contentsOf: URL(fileURLWithPath: path))) } catch {
            throw CertificateError.io("\(path): the highest CRL number seen cannot be read (\(error)); refusing every revocation list "
                + "until it is restored: it guards against an older crl.pem being put back")
        }
        guard content.ca == caID(caCertificate) else { return nil }
        guard content.crlNumber >= 0 else { throw CertificateError.io("\(path): crlNumber \(content.crlNumber) is negative") }
        return content.crlNumber
    }

    static func write(_ number: Int, to path: String, caCertificate: Certificate) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = try encoder.encode(Content(ca: caID(caCertificate), crlNumber: number)) + Data([0x0A])
        try writeFileAtomically(Array(bytes), to: URL(fileURLWithPath: path), mode: 0o600, replace: true)
    }
}

/// Text taken from a certificate nobody vouches for (not issued by the district CA), trimmed for a log line.
func untrusted(_ s: String) -> String {
    let printable = String(String.UnicodeScalarView(s.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }))
    return printable.count <= 80 ? printable : String(printable.prefix(80)) + "…"
}

/// Outcome of validating a school's client certificate.
public enum PeerValidation: Sendable, Equatable {
    case accepted(schoolID: String, serial: String)
    case rejected(PeerRefusal)

    /// The refusal's sentence, if rejected.
    public var reason: String? {
        if case .rejected(let r) = self { return r.reason }
        return nil
    }
}

/// Validates a school client certificate against the district CA and CRL: issued and
/// signed by the CA, inside its validity period, carries the clientAuth usage and a
/// `pando://school/<ID>` SAN URI, and is not revoked. Every rejection carries a
/// human-readable reason naming the certificate.
public struct SchoolCertificateValidator: Sendable {
    public let caCertificate: Certificate
    public let revocation: RevocationListFile?

    public init(caCertificate: Certificate, revocation: RevocationListFile?) {
        self.caCertificate = caCertificate
        self.revocation = revocation
    }

    /// Validates the chain exactly as the TLS layer received it (DER, leaf first): only the
    /// leaf is the peer's identity (see ``PeerLeaf``).
    public func validate(presented: [[UInt8]], now: Date = Date()) -> PeerValidation {
        switch PeerLeaf.parse(presented, role: "school") {
        case .failure(let refusal): return .rejected(refusal)
        case .success(let leaf): return validate(leaf: leaf, now: now)
        }
    }

    /// Validates a parsed leaf certificate (the one whose key signed the handshake).
    public func validate(leaf: Certificate, now: Date = Date()) -> PeerValidation {
        func refuse(_ kind: PeerRefusal.Kind, _ reason: String) -> PeerValidation { .rejected(PeerRefusal(kind: kind, reason: reason)) }
        guard leaf.issuer == caCertificate.subject,
            caCertificate.publicKey.isValidSignature(leaf.signature, for: leaf)
        else {
            // Anyone can present such a certificate: quote its names only trimmed.
            return refuse(.unknownIssuer, "school certificate \(untrusted("\(leaf.subject)")) serial \(untrusted(PandoIdentity.hex(leaf.serialNumber))) "
                + "was not issued by the district CA (issuer \(untrusted("\(leaf.issuer)")))")
        }
        let who = "certificate \(leaf.subject) serial \(PandoIdentity.hex(leaf.serialNumber))"
        if now > caCertificate.notValidAfter {
            return refuse(.expired, "the district CA certificate expired at \(caCertificate.notValidAfter)")
        }
        if now > leaf.notValidAfter {
            return refuse(.expired, "\(who) expired at \(iso(leaf.notValidAfter))")
        }
        if now < leaf.notValidBefore {
            return refuse(.notYetValid, "\(who) is not valid before \(iso(leaf.notValidBefore))")
        }
        if let basic = try? leaf.extensions.basicConstraints, case .isCertificateAuthority = basic {
            return refuse(.wrongUsage, "\(who) is a CA certificate, not a school certificate")
        }
        guard let eku = try? leaf.extensions.extendedKeyUsage, eku.contains(.clientAuth) else {
            return refuse(.wrongUsage, "\(who) lacks the clientAuth extended key usage")
        }
        guard let id = PandoIdentity.schoolID(of: leaf) else {
            return refuse(.noIdentity, "\(who) names no school (needs one SAN URI \(PandoIdentity.schoolURIPrefix)<ID>)")
        }
        if let revocation {
            let (list, warning) = revocation.current(now: now)
            guard let list else {
                return refuse(.revocationUnavailable, "cannot check revocation for school \(id): \(warning ?? "no list")")
            }
            if let at = list.revocationDate(of: leaf.serialNumber) {
                return refuse(.revoked, "\(who) of school \(id) was revoked at \(iso(at))")
            }
        }
        return .accepted(schoolID: id, serial: PandoIdentity.hex(leaf.serialNumber))
    }

    private func iso(_ d: Date) -> String { ISO8601DateFormatter().string(from: d) }
}

/// Validates the coordinator's server certificate on the school side: issued and signed
/// by the district CA, inside its validity period, serverAuth usage, and a SAN that names
/// exactly the host the school dialled (DNS name, case-insensitive, no wildcards; or IP).
/// Stricter than matching the socket's IP address: the *name* the school was configured
/// with must be in the certificate.
///
/// With `revocation` (the `crl.pem` of the school bundle) it also refuses a revoked
/// coordinator certificate, e.g. one retired by `pando certs issue-coordinator` after its key leaked.
public struct CoordinatorCertificateValidator: Sendable {
    public let caCertificate: Certificate
    public let revocation: RevocationListFile?
    public init(caCertificate: Certificate, revocation: RevocationListFile? = nil) {
        self.caCertificate = caCertificate
        self.revocation = revocation
    }

    /// `nil` if acceptable, else the reason. `presented` is the chain exactly as the TLS layer
    /// received it (DER, leaf first); only the leaf is the coordinator's identity (see ``PeerLeaf``).
    public func problem(presented: [[UInt8]], serverName: String, now: Date = Date()) -> String? {
        switch PeerLeaf.parse(presented, role: "coordinator") {
        case .failure(let refusal): return refusal.reason
        case .success(let leaf): return problem(leaf: leaf, serverName: serverName, now: now)
        }
    }

    /// `nil` if the parsed leaf is acceptable, else the reason.
    public func problem(leaf: Certificate, serverName: String, now: Date = Date()) -> String? {
        let who = "coordinator certificate \(leaf.subject)"
        guard leaf.issuer == caCertificate.subject, caCertificate.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            return "coordinator certificate \(untrusted("\(leaf.subject)")) was not issued by the district CA (issuer \(untrusted("\(leaf.issuer)")))"
        }
        if let revocation {
            let (list, warning) = revocation.current(now: now)
            guard let list else { return "cannot check whether \(who) is revoked: \(warning ?? "no list")" }
            if let at = list.revocationDate(of: leaf.serialNumber) {
                return "\(who) serial \(PandoIdentity.hex(leaf.serialNumber)) was revoked at \(RevocationListFile.iso(at)) (per \(revocation.path))"
            }
        }
        if now > leaf.notValidAfter || now > caCertificate.notValidAfter { return "\(who) expired at \(leaf.notValidAfter)" }
        if now < leaf.notValidBefore { return "\(who) is not valid before \(leaf.notValidBefore)" }
        guard let eku = try? leaf.extensions.extendedKeyUsage, eku.contains(.serverAuth) else {
            return "\(who) lacks the serverAuth extended key usage"
        }
        let sans = (try? leaf.extensions.subjectAlternativeNames).map { Array($0) } ?? []
        let ip = CertificateAuthority.ipBytes(serverName)
        let wanted = serverName.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        var names: [String] = []
        for san in sans {
            switch san {
            case .dnsName(let d):
                names.append(d)
                if ip == nil && d.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: ".")) == wanted { return nil }
            case .ipAddress(let octets):
                names.append(octets.bytes.map(String.init).joined(separator: "."))
                if let ip, Array(octets.bytes) == ip { return nil }
            default: continue
            }
        }
        return "the coordinator's certificate does not name \(serverName) (it names \(names.joined(separator: ", ")))"
    }
}
