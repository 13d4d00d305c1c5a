import Foundation
import X509

/// A CRL file the coordinator re-reads whenever it changes on disk (checked on every
/// handshake by size + modification time + inode), so `pando certs revoke` takes effect
/// for the next connection without a restart. A file that fails to parse or verify is
/// ignored in favour of the last good list, and the problem is reported.
public final class RevocationListFile: @unchecked Sendable {
    public let path: String
    private let caCertificate: Certificate
    private let lock = NSLock()
    private var stamp: [Int64]? = nil
    private var cached: RevocationList? = nil
    private var lastError: String? = nil

    public init(path: String, caCertificate: Certificate) {
        self.path = path
        self.caCertificate = caCertificate
    }

    /// The current list, or an error message when no valid list has ever been read.
    /// `warning` is set when the file changed but the new content was rejected.
    public func current() -> (list: RevocationList?, warning: String?) {
        lock.lock()
        defer { lock.unlock() }
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
                cached = try RevocationList(verifying: bytes, caCertificate: caCertificate)
                lastError = nil
            } catch {
                lastError = "revocation list \(path) rejected (\(error)); keeping the previous list"
            }
        }
        return (cached, cached == nil ? (lastError ?? "no revocation list") : lastError)
    }
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
        let who = "certificate \(leaf.subject) serial \(PandoIdentity.hex(leaf.serialNumber))"
        guard leaf.issuer == caCertificate.subject,
            caCertificate.publicKey.isValidSignature(leaf.signature, for: leaf)
        else {
            return .rejected(reason: "\(who) was not issued by the district CA (issuer \(leaf.issuer))")
        }
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
            let (list, warning) = revocation.current()
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
public struct CoordinatorCertificateValidator: Sendable {
    public let caCertificate: Certificate
    public init(caCertificate: Certificate) { self.caCertificate = caCertificate }

    /// `nil` if acceptable, else the reason.
    public func problem(chain: [Certificate], serverName: String, now: Date = Date()) -> String? {
        guard let leaf = chain.first else { return "the coordinator presented no certificate" }
        let who = "coordinator certificate \(leaf.subject)"
        guard leaf.issuer == caCertificate.subject, caCertificate.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            return "\(who) was not issued by the district CA (issuer \(leaf.issuer))"
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
