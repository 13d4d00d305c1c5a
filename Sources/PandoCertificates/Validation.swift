import Foundation
import X509

/// A CRL file re-read whenever it changes on disk (checked on every handshake by size +
/// modification time + inode), so `pando certs revoke` takes effect for the next connection
/// without a restart.
///
/// - A file that fails to parse or verify is ignored in favour of the last good list.
/// - Replay: the highest CRL number accepted so far is remembered, and a list with a lower
///   number (an older `crl.pem` copied back, which would un-revoke certificates) is refused
///   in favour of the last good list. (Held in memory: a restarted process accepts the file
///   it finds, subject to the staleness rule below.)
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
    private let caCertificate: Certificate
    private let report: (@Sendable (String) -> Void)?
    private let lock = NSLock()
    private var stamp: [Int64]? = nil
    private var cached: RevocationList? = nil
    private var highestNumber = 0
    private var lastError: String? = nil
    private var lastReported: String? = nil

    /// Warn this long before `nextUpdate`.
    public static let expiryWarning: TimeInterval = 30 * 86400

    public init(path: String, caCertificate: Certificate, stalePolicy: StalePolicy = .refuse,
                report: (@Sendable (String) -> Void)? = nil) {
        self.path = path
        self.caCertificate = caCertificate
        self.stalePolicy = stalePolicy
        self.report = report
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
                    highestNumber = list.number
                    lastError = nil
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

/// Text taken from a certificate nobody vouches for (not issued by the district CA), trimmed for a log line.
func untrusted(_ s: String) -> String {
    let printable = String(String.UnicodeScalarView(s.unicodeScalars.filter { $0.value >= 0x20 && $0.value < 0x7F }))
    return printable.count <= 80 ? printable : String(printable.prefix(80)) + "…"
}

/// Outcome of validating a school's client certificate.
public enum PeerValidation: Sendable, Equatable {
    case accepted(schoolID: String, serial: String)
    case rejected(reason: String)
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

    public func validate(chain: [Certificate], now: Date = Date()) -> PeerValidation {
        guard let leaf = chain.first else { return .rejected(reason: "no client certificate presented") }
        guard leaf.issuer == caCertificate.subject,
            caCertificate.publicKey.isValidSignature(leaf.signature, for: leaf)
        else {
            // Anyone can present such a certificate: quote its names only trimmed.
            return .rejected(reason: "certificate \(untrusted("\(leaf.subject)")) serial \(untrusted(PandoIdentity.hex(leaf.serialNumber))) "
                + "was not issued by the district CA (issuer \(untrusted("\(leaf.issuer)")))")
        }
        let who = "certificate \(leaf.subject) serial \(PandoIdentity.hex(leaf.serialNumber))"
        if now > caCertificate.notValidAfter {
            return .rejected(reason: "the district CA certificate expired at \(caCertificate.notValidAfter)")
        }
        if now > leaf.notValidAfter {
            return .rejected(reason: "\(who) expired at \(iso(leaf.notValidAfter))")
        }
        if now < leaf.notValidBefore {
            return .rejected(reason: "\(who) is not valid before \(iso(leaf.notValidBefore))")
        }
        if let basic = try? leaf.extensions.basicConstraints, case .isCertificateAuthority = basic {
            return .rejected(reason: "\(who) is a CA certificate, not a school certificate")
        }
        guard let eku = try? leaf.extensions.extendedKeyUsage, eku.contains(.clientAuth) else {
            return .rejected(reason: "\(who) lacks the clientAuth extended key usage")
        }
        guard let id = PandoIdentity.schoolID(of: leaf) else {
            return .rejected(reason: "\(who) names no school (needs one SAN URI \(PandoIdentity.schoolURIPrefix)<ID>)")
        }
        if let revocation {
            let (list, warning) = revocation.current(now: now)
            guard let list else {
                return .rejected(reason: "cannot check revocation for school \(id): \(warning ?? "no list")")
            }
            if let at = list.revocationDate(of: leaf.serialNumber) {
                return .rejected(reason: "\(who) of school \(id) was revoked at \(iso(at))")
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

    /// `nil` if acceptable, else the reason.
    public func problem(chain: [Certificate], serverName: String, now: Date = Date()) -> String? {
        guard let leaf = chain.first else { return "the coordinator presented no certificate" }
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
