import Crypto
import Foundation
import SwiftASN1
import X509

/// The district's certificate folder (default `certs/generated/`):
///
/// ```
/// ca.pem  ca-key.pem  crl.pem  issued.json
/// coordinator/coordinator.pem  coordinator/coordinator-key.pem  coordinator/ca.pem
/// schools/<ID>/school.pem      schools/<ID>/school-key.pem      schools/<ID>/ca.pem
/// ```
///
/// Keys are ECDSA P-256, written with mode 0600 and never printed.
public struct CertificateAuthority {
    public let directory: URL
    public let certificate: Certificate
    let key: P256.Signing.PrivateKey

    /// One line of `issued.json`.
    public struct Issued: Codable, Sendable, Equatable {
        public var serial: String
        public var kind: String  // "ca" | "coordinator" | "school"
        public var name: String
        public var notBefore: Date
        public var notAfter: Date
        public var revokedAt: Date?
    }

    public var caPath: URL { directory.appendingPathComponent("ca.pem") }
    public var crlPath: URL { directory.appendingPathComponent("crl.pem") }
    public static func coordinatorDirectory(_ dir: URL) -> URL { dir.appendingPathComponent("coordinator") }
    public static func schoolDirectory(_ dir: URL, id: String) -> URL {
        dir.appendingPathComponent("schools").appendingPathComponent(id)
    }

    // MARK: init / load

    /// Creates a new district CA in `directory` (which must not already hold one) and an empty CRL.
    @discardableResult
    public static func initialise(at directory: URL, districtName: String, validityDays: Int = 3650, now: Date = Date()) throws -> CertificateAuthority {
        let fm = FileManager.default
        let caFile = directory.appendingPathComponent("ca.pem")
        if fm.fileExists(atPath: caFile.path) { throw CertificateError.alreadyExists(caFile.path) }
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName(districtName)
            CommonName("\(districtName) Pando district CA")
        }
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(validityDays) * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key))
        try writeSecret(key.pemRepresentation, to: directory.appendingPathComponent("ca-key.pem"))
        try writePublic(try cert.serializeAsPEM().pemString, to: caFile)
        let ca = CertificateAuthority(directory: directory, certificate: cert, key: key)
        try ca.saveLedger([Issued(serial: PandoIdentity.hex(cert.serialNumber), kind: "ca", name: districtName,
                                  notBefore: cert.notValidBefore, notAfter: cert.notValidAfter, revokedAt: nil)])
        try ca.writeCRL(number: 1, now: now)
        return ca
    }

    /// Opens an existing CA folder.
    public init(directory: URL) throws {
        let caFile = directory.appendingPathComponent("ca.pem")
        let keyFile = directory.appendingPathComponent("ca-key.pem")
        guard FileManager.default.fileExists(atPath: caFile.path), FileManager.default.fileExists(atPath: keyFile.path) else {
            throw CertificateError.notInitialised(directory.path)
        }
        self.directory = directory
        self.certificate = try Certificate(pemEncoded: String(contentsOf: caFile, encoding: .utf8))
        self.key = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOf: keyFile, encoding: .utf8))
    }

    init(directory: URL, certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.directory = directory
        self.certificate = certificate
        self.key = key
    }

    // MARK: issue

    /// Issues the coordinator's server certificate with `hosts` as DNS (or IP) SANs.
    @discardableResult
    public func issueCoordinator(hosts: [String], validityDays: Int = 825, now: Date = Date()) throws -> Certificate {
        guard !hosts.isEmpty else { throw CertificateError.malformed("give at least one --host name for the coordinator") }
        var sans: [GeneralName] = []
        for h in hosts {
            if let ip = Self.ipBytes(h) { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip)))) }
            else { sans.append(.dnsName(h)) }
        }
        let dir = Self.coordinatorDirectory(directory)
        let (cert, _) = try issue(
            subject: try DistinguishedName { CommonName(hosts[0]) }, kind: "coordinator", name: hosts.joined(separator: ","),
            sans: sans, usage: .serverAuth, notBefore: now.addingTimeInterval(-300),
            notAfter: now.addingTimeInterval(Double(validityDays) * 86400), into: dir, baseName: "coordinator", replace: true)
        return cert
    }

    /// Issues a school's client certificate naming it by the SAN URI `pando://school/<id>`.
    /// Refuses if the school already has a live certificate unless `replace` (which revokes the old one).
    @discardableResult
    public func issueSchool(id: String, validityDays: Int = 825, notBefore: Date? = nil, notAfter: Date? = nil,
                            replace: Bool = false, now: Date = Date()) throws -> Certificate {
        guard PandoIdentity.isValidSchoolID(id) else { throw CertificateError.invalidSchoolID(id) }
        let live = try ledger().filter { $0.kind == "school" && $0.name == id && $0.revokedAt == nil }
        if !live.isEmpty {
            guard replace else {
                throw CertificateError.conflict("school \(id) already has a live certificate (serial \(live[0].serial)); revoke it first or pass --replace")
            }
            try revoke(schoolID: id, now: now)
        }
        let (cert, _) = try issue(
            subject: try DistinguishedName { CommonName("school:\(id)") }, kind: "school", name: id,
            sans: [.uniformResourceIdentifier(PandoIdentity.schoolURIPrefix + id)], usage: .clientAuth,
            notBefore: notBefore ?? now.addingTimeInterval(-300),
            notAfter: notAfter ?? now.addingTimeInterval(Double(validityDays) * 86400),
            into: Self.schoolDirectory(directory, id: id), baseName: "school", replace: true)
        return cert
    }

    private func issue(subject: DistinguishedName, kind: String, name: String, sans: [GeneralName],
                       usage: ExtendedKeyUsage.Usage, notBefore: Date, notAfter: Date,
                       into dir: URL, baseName: String, replace: Bool) throws -> (Certificate, P256.Signing.PrivateKey) {
        let leafKey = P256.Signing.PrivateKey()
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(leafKey.publicKey),
            notValidBefore: notBefore, notValidAfter: notAfter,
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([usage])
                SubjectAlternativeNames(sans)
                SubjectKeyIdentifier(hash: .init(leafKey.publicKey))
            },
            issuerPrivateKey: .init(key))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let keyFile = dir.appendingPathComponent("\(baseName)-key.pem")
        if replace { try? FileManager.default.removeItem(at: keyFile) }
        try writeSecret(leafKey.pemRepresentation, to: keyFile)
        try writePublic(try cert.serializeAsPEM().pemString, to: dir.appendingPathComponent("\(baseName).pem"))
        try writePublic(try certificate.serializeAsPEM().pemString, to: dir.appendingPathComponent("ca.pem"))
        var entries = try ledger()
        entries.append(Issued(serial: PandoIdentity.hex(cert.serialNumber), kind: kind, name: name,
                              notBefore: notBefore, notAfter: notAfter, revokedAt: nil))
        try saveLedger(entries)
        return (cert, leafKey)
    }

    // MARK: revoke / list

    /// Revokes every live certificate of school `id` and rewrites `crl.pem` (the coordinator picks it up on the next handshake).
    @discardableResult
    public func revoke(schoolID id: String, now: Date = Date()) throws -> [String] {
        var entries = try ledger()
        var revoked: [String] = []
        for i in entries.indices where entries[i].kind == "school" && entries[i].name == id && entries[i].revokedAt == nil {
            entries[i].revokedAt = now
            revoked.append(entries[i].serial)
        }
        guard !revoked.isEmpty else { throw CertificateError.unknownSchool(id) }
        try saveLedger(entries)
        let number = ((try? RevocationList(verifying: [UInt8](Data(contentsOf: crlPath)), caCertificate: certificate))?.number ?? 0) + 1
        try writeCRL(number: number, now: now)
        return revoked
    }

    /// Everything issued so far, oldest first.
    public func list() throws -> [Issued] { try ledger() }

    /// Rewrites `crl.pem` from the ledger (valid for a year; re-run `revoke` or `init` tooling to refresh).
    public func writeCRL(number: Int, now: Date = Date()) throws {
        let entries = try ledger().compactMap { e -> RevocationList.Entry? in
            guard let at = e.revokedAt, let bytes = Self.unhex(e.serial) else { return nil }
            return .init(serial: Array(Certificate.SerialNumber(bytes: bytes).bytes), revokedAt: at)
        }
        let crl = RevocationList(number: number, thisUpdate: now.addingTimeInterval(-60),
                                 nextUpdate: now.addingTimeInterval(365 * 86400), entries: entries)
        // Atomic replace so a coordinator never reads a half-written CRL.
        let tmp = directory.appendingPathComponent(".crl.pem.tmp")
        try? FileManager.default.removeItem(at: tmp)
        try writePublic(try crl.pemEncoded(caCertificate: certificate, caKey: key), to: tmp)
        guard rename(tmp.path, crlPath.path) == 0 else {
            throw CertificateError.io("cannot replace \(crlPath.path): \(String(cString: strerror(errno)))")
        }
    }

    private var ledgerPath: URL { directory.appendingPathComponent("issued.json") }

    private func ledger() throws -> [Issued] {
        guard FileManager.default.fileExists(atPath: ledgerPath.path) else { return [] }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .iso8601
        return try dec.decode([Issued].self, from: Data(contentsOf: ledgerPath))
    }

    private func saveLedger(_ entries: [Issued]) throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(entries).write(to: ledgerPath, options: .atomic)
    }

    // MARK: files

    static func unhex(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var chars = Array(s.utf8)[...]
        guard chars.count % 2 == 0 else { return nil }
        while !chars.isEmpty {
            guard let b = UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
            chars = chars.dropFirst(2)
        }
        return out
    }

    static func ipBytes(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

/// Writes `text` to a new file created with mode 0600 (O_EXCL: never reuses an existing file's mode).
func writeSecret(_ text: String, to url: URL) throws {
    let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard fd >= 0 else { throw CertificateError.io("cannot create \(url.path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    _ = fchmod(fd, 0o600)
    let bytes = Array(text.utf8)
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw CertificateError.io("cannot write \(url.path)") }
        written += n
    }
}

func writePublic(_ text: String, to url: URL) throws {
    try Data(text.utf8).write(to: url, options: .atomic)
}
