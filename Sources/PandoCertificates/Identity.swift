import Foundation
import X509

/// Where a Pando certificate names its holder.
///
/// A school's identity is the single SAN URI `pando://school/<ID>` in its client
/// certificate. The coordinator never trusts anything the client *says* about
/// who it is; it takes the ID from the verified certificate. The common name
/// (`school:<ID>`) is informational only.
public enum PandoIdentity {
    /// URI scheme and path prefix of a school identity SAN.
    public static let schoolURIPrefix = "pando://school/"

    /// Whether `id` is a valid school identifier: 1–64 characters of
    /// `A–Z a–z 0–9 . _ -`, starting with a letter or digit.
    public static func isValidSchoolID(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        guard (1...64).contains(bytes.count) else { return false }
        for (i, b) in bytes.enumerated() {
            let alnum = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
            if alnum { continue }
            if i > 0 && (b == 0x2E || b == 0x5F || b == 0x2D) { continue }
            return false
        }
        return true
    }

    /// The school ID named by `certificate`'s `pando://school/<ID>` SAN URI, if exactly one valid one is present.
    public static func schoolID(of certificate: Certificate) -> String? {
        guard let sans = try? certificate.extensions.subjectAlternativeNames else { return nil }
        var found: [String] = []
        for name in sans {
            if case .uniformResourceIdentifier(let uri) = name, uri.hasPrefix(schoolURIPrefix) {
                found.append(String(uri.dropFirst(schoolURIPrefix.count)))
            }
        }
        guard found.count == 1, isValidSchoolID(found[0]) else { return nil }
        return found[0]
    }

    /// Lower-case hex of a serial number (no separators), as used in `pando certs list` and logs.
    public static func hex(_ serial: Certificate.SerialNumber) -> String {
        serial.bytes.map { String(format: "%02x", $0) }.joined()
    }
}

/// Errors of the certificate tooling and peer validation, each with a message naming the problem.
public enum CertificateError: Error, CustomStringConvertible, Equatable {
    case invalidSchoolID(String)
    case notInitialised(String)
    case alreadyExists(String)
    case conflict(String)
    case unknownSchool(String)
    case malformed(String)
    case io(String)
    case insecureKeyFile(String)

    public var description: String {
        switch self {
        case .invalidSchoolID(let id):
            return "invalid school ID \(id.debugDescription): use 1–64 characters A–Z a–z 0–9 . _ - starting with a letter or digit"
        case .notInitialised(let dir): return "no district CA in \(dir): run `pando certs init` first"
        case .alreadyExists(let path): return "\(path) already exists; refusing to overwrite it"
        case .unknownSchool(let id): return "no certificate was issued to school \(id.debugDescription)"
        case .conflict(let what): return what
        case .malformed(let what): return what
        case .io(let what): return what
        case .insecureKeyFile(let what): return what
        }
    }
}
