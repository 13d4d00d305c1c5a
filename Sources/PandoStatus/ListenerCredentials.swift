import Crypto
import Foundation
import NIOSSL

/// What an HTTP listener off loopback needs, shared by the status listener and `pando serve`:
/// a bearer token read from a file only its owner may read (compared as SHA-256 digests in
/// constant time, never logged), and a TLS server configuration (optionally requiring client
/// certificates of a CA). `field` names the setting in error messages ("status.token_file",
/// "--token-file").
public struct ListenerCredentials: Sendable {
    let tokenDigest: SHA256Digest?

    /// No token: every request is authorised.
    public static let none = ListenerCredentials(tokenDigest: nil)

    init(tokenDigest: SHA256Digest?) { self.tokenDigest = tokenDigest }

    /// Reads the token in `tokenFile` now, so a bad credential stops the service at start.
    public init(tokenFile: URL?, field: String) throws {
        tokenDigest = try tokenFile.map { SHA256.hash(data: Data(try Self.readToken($0, field: field).utf8)) }
    }

    /// The token in `url`: one line of at least 16 characters, in a file that neither group
    /// nor others may read or write.
    public static func readToken(_ url: URL, field: String) throws -> String {
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: url.path) } catch {
            throw StatusError("\(field): \(url.path) cannot be read (\(error.localizedDescription))")
        }
        let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0o777
        guard mode & 0o077 == 0 else {
            throw StatusError("\(field): \(url.path) has mode \(String(mode, radix: 8)); only its owner may read it (chmod 600)")
        }
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw StatusError("\(field): \(url.path) is not UTF-8 text")
        }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard token.count >= 16, !token.contains(where: { $0.isWhitespace }) else {
            throw StatusError("\(field): \(url.path) must hold one token of at least 16 characters, without spaces")
        }
        return token
    }

    /// Whether a token is required.
    public var requiresToken: Bool { tokenDigest != nil }

    /// Whether an `Authorization` header carries the token (SHA-256 of both, compared in constant time).
    public func authorised(_ header: String?) -> Bool {
        guard let tokenDigest else { return true }
        guard let header, header.hasPrefix("Bearer ") else { return false }
        let given = SHA256.hash(data: Data(header.dropFirst("Bearer ".count).utf8))
        var difference: UInt8 = 0
        for (a, b) in zip(given, tokenDigest) { difference |= a ^ b }
        return difference == 0
    }

    /// A TLS 1.2+ server configuration from PEM files; with `clientCA`, clients must present
    /// a certificate that CA issued.
    public static func tlsConfiguration(certificate: URL, key: URL, clientCA: URL?, field: String) throws -> TLSConfiguration {
        do {
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate.path).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key.path, format: .pem)))
            tls.minimumTLSVersion = .tlsv12
            if let clientCA {
                tls.certificateVerification = .noHostnameVerification
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA.path))
            }
            return tls
        } catch {
            throw StatusError("\(field): \(error)")
        }
    }
}
