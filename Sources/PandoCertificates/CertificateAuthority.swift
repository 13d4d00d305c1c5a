import Crypto
import Foundation
import SwiftASN1
import X509

/// The district's certificate folder (default `certs/generated/`):
///
/// ```
/// ca.pem  ca-key.pem  crl.pem  issued.json
/// coordinator/coordinator.pem  coordinator/coordinator-key.pem  coordinator/ca.pem
/// schools/<ID>/school.pem      schools/<ID>/school-key.pem      schools/<ID>/ca.pem  schools/<ID>/crl.pem
/// ```
///
/// Keys are ECDSA P-256, written with mode 0600 (temp file, fsync, rename) and never printed;
/// a key file readable by group or others is refused when loaded.
/// `issued.json` holds every certificate issued and the number of the last CRL published,
/// so CRL numbers only ever grow (coordinators refuse a CRL older than one they have seen).
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
        try writeSecret(key.pemRepresentation, to: directory.appendingPathComponent("ca-key.pem"), replace: false)
        try writePublic(try cert.serializeAsPEM().pemString, to: caFile)
        let ca = CertificateAuthority(directory: directory, certificate: cert, key: key)
        let entries = [Issued(serial: PandoIdentity.hex(cert.serialNumber), kind: "ca", name: districtName,
                              notBefore: cert.notValidBefore, notAfter: cert.notValidAfter, revokedAt: nil)]
        let number = try ca.publishCRL(entries: entries, now: now)
        try ca.saveLedger(Ledger(crlNumber: number, certificates: entries))
        return ca
    }

    /// Opens an existing CA folder.
    public init(directory: URL) throws {
        let caFile = directory.appendingPathComponent("ca.pem")
        let keyFile = directory.appendingPathComponent("ca-key.pem")
        guard FileManager.default.fileExists(atPath: caFile.path), FileManager.default.fileExists(atPath: keyFile.path) else {
            throw CertificateError.notInitialised(directory.path)
        }
        if let problem = PrivateKeyFile.permissionProblem(path: keyFile.path) { throw CertificateError.insecureKeyFile(problem) }
        self.directory = directory
        self.certificate = try Certificate(pemEncoded: String(contentsOf: caFile, encoding: .utf8))
        self.key = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOf: keyFile, encoding: .utf8))
    }

    init(directory: URL, certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.directory = directory
        self.certificate = certificate
        self.key = key
    }

    /// The CA key's ECDSA P-256 signature (DER, over SHA-256) of `data`: how the CA signs the
    /// records of its own event log (`ca-events.jsonl`). The key itself never leaves this type.
    public func signRecord(_ data: Data) throws -> Data {
        try key.signature(for: data).derRepresentation
    }

    /// The P-256 public key (X9.63 bytes) of the CA certificate in `url` (a `ca.pem`): what
    /// checks the CA's event log, for an officer who holds only the certificate.
    public static func publicKey(ofCertificateAt url: URL) throws -> Data {
        let pem: String
        do { pem = try String(contentsOf: url, encoding: .utf8) } catch { throw CertificateError.io("cannot read \(url.path)") }
        guard let certificate = try? Certificate(pemEncoded: pem) else { throw CertificateError.malformed("\(url.path) is not a PEM certificate") }
        guard let key = P256.Signing.PublicKey(certificate.publicKey) else {
            throw CertificateError.malformed("\(url.path): the CA's key is not ECDSA P-256")
        }
        return key.x963Representation
    }

    // MARK: issue

    /// Issues the coordinator's server certificate with `hosts` as DNS (or IP) SANs.
    /// Every earlier coordinator certificate is revoked (a leaked coordinator key is retired by
    /// re-issuing) and the CRL is republished; schools check it from the `crl.pem` in their bundle.
    @discardableResult
    public func issueCoordinator(hosts: [String], validityDays: Int = 825, now: Date = Date()) throws -> Certificate {
        guard !hosts.isEmpty else { throw CertificateError.malformed("give at least one --host name for the coordinator") }
        var sans: [GeneralName] = []
        for h in hosts {
            if let ip = Self.ipBytes(h) { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip)))) }
            else { sans.append(.dnsName(h)) }
        }
        let dir = Self.coordinatorDirectory(directory)
        var ledger = try loadLedger()
        let (cert, entry) = try issue(
            subject: try DistinguishedName { CommonName(hosts[0]) }, kind: "coordinator", name: hosts.joined(separator: ","),
            sans: sans, usage: .serverAuth, notBefore: now.addingTimeInterval(-300),
            notAfter: now.addingTimeInterval(Double(validityDays) * 86400), into: dir, baseName: "coordinator")
        var retired = false
        for i in ledger.certificates.indices where ledger.certificates[i].kind == "coordinator" && ledger.certificates[i].revokedAt == nil {
            ledger.certificates[i].revokedAt = now
            retired = true
        }
        ledger.certificates.append(entry)
        // CRL first, then the ledger: a failure in between leaves the ledger saying "live" for a
        // certificate the CRL already lists, never the reverse.
        if retired { ledger.crlNumber = try publishCRL(entries: ledger.certificates, now: now) }
        try saveLedger(ledger)
        return cert
    }

    /// Issues a school's client certificate naming it by the SAN URI `pando://school/<id>`.
    /// Refuses if the school already has a live certificate unless `replace` (which revokes the old one).
    @discardableResult
    public func issueSchool(id: String, validityDays: Int = 825, notBefore: Date? = nil, notAfter: Date? = nil,
                            replace: Bool = false, now: Date = Date()) throws -> Certificate {
        guard PandoIdentity.isValidSchoolID(id) else { throw CertificateError.invalidSchoolID(id) }
        let live = try loadLedger().certificates.filter { $0.kind == "school" && $0.name == id && $0.revokedAt == nil }
        if !live.isEmpty {
            guard replace else {
                throw CertificateError.conflict("school \(id) already has a live certificate (serial \(live[0].serial)); revoke it first or pass --replace")
            }
            try revoke(schoolID: id, now: now)
        }
        let dir = Self.schoolDirectory(directory, id: id)
        let (cert, entry) = try issue(
            subject: try DistinguishedName { CommonName("school:\(id)") }, kind: "school", name: id,
            sans: [.uniformResourceIdentifier(PandoIdentity.schoolURIPrefix + id)], usage: .clientAuth,
            notBefore: notBefore ?? now.addingTimeInterval(-300),
            notAfter: notAfter ?? now.addingTimeInterval(Double(validityDays) * 86400),
            into: dir, baseName: "school")
        var ledger = try loadLedger()
        ledger.certificates.append(entry)
        // The school checks the coordinator's certificate against a copy of the CRL in its bundle.
        if (try? currentCRL()) != nil {
            try saveLedger(ledger)
            try writePublic(String(contentsOf: crlPath, encoding: .utf8), to: dir.appendingPathComponent("crl.pem"))
        } else {
            // No usable crl.pem (e.g. deleted): publish one, which also fills every bundle.
            ledger.crlNumber = try publishCRL(entries: ledger.certificates, now: now)
            try saveLedger(ledger)
        }
        return cert
    }

    private func issue(subject: DistinguishedName, kind: String, name: String, sans: [GeneralName],
                       usage: ExtendedKeyUsage.Usage, notBefore: Date, notAfter: Date,
                       into dir: URL, baseName: String) throws -> (Certificate, Issued) {
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
        try writeSecret(leafKey.pemRepresentation, to: keyFile, replace: true)
        try writePublic(try cert.serializeAsPEM().pemString, to: dir.appendingPathComponent("\(baseName).pem"))
        try writePublic(try certificate.serializeAsPEM().pemString, to: dir.appendingPathComponent("ca.pem"))
        return (cert, Issued(serial: PandoIdentity.hex(cert.serialNumber), kind: kind, name: name,
                             notBefore: notBefore, notAfter: notAfter, revokedAt: nil))
    }

    // MARK: revoke / list

    /// Revokes every live certificate of school `id` and rewrites `crl.pem` (the coordinator picks it up on the next handshake).
    ///
    /// The CRL is written (from the updated entries) before the ledger, so a failure can never
    /// leave a school marked revoked but missing from the CRL. Idempotent: if the school's
    /// certificates are all revoked already, the CRL is republished and their serials returned.
    @discardableResult
    public func revoke(schoolID id: String, now: Date = Date()) throws -> [String] {
        var ledger = try loadLedger()
        var revoked: [String] = []
        var already: [String] = []
        for i in ledger.certificates.indices where ledger.certificates[i].kind == "school" && ledger.certificates[i].name == id {
            if ledger.certificates[i].revokedAt == nil {
                ledger.certificates[i].revokedAt = now
                revoked.append(ledger.certificates[i].serial)
            } else {
                already.append(ledger.certificates[i].serial)
            }
        }
        guard !revoked.isEmpty || !already.isEmpty else { throw CertificateError.unknownSchool(id) }
        ledger.crlNumber = try publishCRL(entries: ledger.certificates, now: now)
        try saveLedger(ledger)
        return revoked.isEmpty ? already : revoked
    }

    /// Republishes `crl.pem` with a new CRL number and a fresh validity period (`nextUpdate`
    /// one year ahead). Coordinators refuse schools once the CRL they hold is past its
    /// `nextUpdate`, so run this (`pando certs refresh-crl`) well within the year.
    @discardableResult
    public func refreshCRL(now: Date = Date()) throws -> RevocationList {
        var ledger = try loadLedger()
        ledger.crlNumber = try publishCRL(entries: ledger.certificates, now: now)
        try saveLedger(ledger)
        return try currentCRL()
    }

    /// The CRL currently in `crl.pem`, verified.
    public func currentCRL() throws -> RevocationList {
        try RevocationList(verifying: [UInt8](Data(contentsOf: crlPath)), caCertificate: certificate)
    }

    /// Everything issued so far, oldest first.
    public func list() throws -> [Issued] { try loadLedger().certificates }

    /// How long a published CRL stays valid.
    public static let crlValidity: TimeInterval = 365 * 86400

    /// Writes `crl.pem` listing the revoked ones among `entries`, numbered one above the highest
    /// number known from the ledger or the current `crl.pem` (never reset: an older CRL must
    /// stay distinguishable from a newer one). Copies it into every school bundle folder.
    /// Returns the number used; the caller records it in the ledger.
    private func publishCRL(entries all: [Issued], now: Date) throws -> Int {
        let entries = all.compactMap { e -> RevocationList.Entry? in
            guard let at = e.revokedAt, let bytes = Self.unhex(e.serial) else { return nil }
            return .init(serial: Array(Certificate.SerialNumber(bytes: bytes).bytes), revokedAt: at)
        }
        let fromLedger = (try? loadLedger())?.crlNumber
        let fromFile = try? currentCRL().number
        let number: Int
        if fromLedger == nil && fromFile == nil && FileManager.default.fileExists(atPath: crlPath.path) {
            // A CRL was published before but neither the ledger (pre-1.1 format) nor crl.pem tells its
            // number: use the time, which is above any counter this tool has produced.
            number = Int(now.timeIntervalSince1970)
        } else {
            number = max(fromLedger ?? 0, fromFile ?? 0) + 1
        }
        let crl = RevocationList(number: number, thisUpdate: now.addingTimeInterval(-60),
                                 nextUpdate: now.addingTimeInterval(Self.crlValidity), entries: entries)
        let pem = try crl.pemEncoded(caCertificate: certificate, caKey: key)
        // Atomic replace (temp file, fsync, rename) so a coordinator never reads a half-written CRL.
        try writePublic(pem, to: crlPath)
        let schools = directory.appendingPathComponent("schools")
        for id in (try? FileManager.default.contentsOfDirectory(atPath: schools.path)) ?? [] {
            let dir = schools.appendingPathComponent(id)
            guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("school.pem").path) else { continue }
            try writePublic(pem, to: dir.appendingPathComponent("crl.pem"))
        }
        return number
    }

    private var ledgerPath: URL { directory.appendingPathComponent("issued.json") }

    /// `issued.json`: `{"crlNumber": n, "certificates": [...]}` (older folders hold just the array).
    struct Ledger: Codable {
        var crlNumber: Int?
        var certificates: [Issued]
    }

    private func loadLedger() throws -> Ledger {
        guard FileManager.default.fileExists(atPath: ledgerPath.path) else { return Ledger(crlNumber: nil, certificates: []) }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .iso8601
        let data = try Data(contentsOf: ledgerPath)
        if let ledger = try? dec.decode(Ledger.self, from: data) { return ledger }
        return Ledger(crlNumber: nil, certificates: try dec.decode([Issued].self, from: data))
    }

    private func saveLedger(_ ledger: Ledger) throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeFileAtomically(Array(try enc.encode(ledger)), to: ledgerPath, mode: 0o644, replace: true)
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

/// Writes `text` to `url` with mode 0600: a new temp file (O_EXCL, 0600) in the same folder,
/// fsync, then rename over `url` (or, with `replace: false`, link — failing if `url` exists).
/// A failure leaves no partial key behind.
func writeSecret(_ text: String, to url: URL, replace: Bool) throws {
    try writeFileAtomically(Array(text.utf8), to: url, mode: 0o600, replace: replace)
}

func writePublic(_ text: String, to url: URL) throws {
    try writeFileAtomically(Array(text.utf8), to: url, mode: 0o644, replace: true)
}

func writeFileAtomically(_ bytes: [UInt8], to url: URL, mode: mode_t, replace: Bool) throws {
    func fail(_ what: String) -> CertificateError {
        .io("cannot \(what) \(url.path): \(String(cString: strerror(errno)))")
    }
    let dir = url.deletingLastPathComponent()
    let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp").path
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    guard fd >= 0 else { throw fail("create a temporary file for") }
    var done = false
    defer { if !done { unlink(tmp) } }
    do {
        defer { close(fd) }
        guard fchmod(fd, mode) == 0 else { throw fail("set the mode of") }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw fail("write") }
            written += n
        }
        guard fsync(fd) == 0 else { throw fail("fsync") }
    }
    if replace {
        guard rename(tmp, url.path) == 0 else { throw fail("replace") }
    } else {
        guard link(tmp, url.path) == 0 else {
            if errno == EEXIST { throw CertificateError.alreadyExists(url.path) }
            throw fail("create")
        }
        unlink(tmp)
    }
    done = true
    let dfd = open(dir.path, O_RDONLY | O_DIRECTORY)
    if dfd >= 0 {
        fsync(dfd)
        close(dfd)
    }
}

/// Permission check for private key files.
public enum PrivateKeyFile {
    /// `nil` if `path` is a key file only its owner can access; otherwise a message naming the
    /// file, its mode and the fix. (A missing file is not reported here.)
    public static func permissionProblem(path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let mode = st.st_mode & 0o777
        guard mode & 0o077 != 0 else { return nil }
        return "private key \(path) is accessible by group or others (mode 0\(String(mode, radix: 8))); run `chmod 600 \(path)`"
    }
}
