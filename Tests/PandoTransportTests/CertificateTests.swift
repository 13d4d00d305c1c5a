import Crypto
import Foundation
import PandoCertificates
import X509
import XCTest

final class CertificateTests: XCTestCase {
    func testIssueListRevokeAndKeyPermissions() throws {
        let pki = try TestPKI()
        let ca = pki.ca
        let cert = try ca.issueSchool(id: "lincoln-high")
        XCTAssertEqual(PandoIdentity.schoolID(of: cert), "lincoln-high")
        for key in ["ca-key.pem", "coordinator/coordinator-key.pem", "schools/lincoln-high/school-key.pem"] {
            let attrs = try FileManager.default.attributesOfItem(atPath: pki.dir.appendingPathComponent(key).path)
            XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o600, key)
        }
        XCTAssertThrowsError(try ca.issueSchool(id: "lincoln-high"))  // already has a live certificate
        XCTAssertThrowsError(try ca.issueSchool(id: "bad id!"))
        XCTAssertThrowsError(try CertificateAuthority.initialise(at: pki.dir, districtName: "again"))

        let validator = SchoolCertificateValidator(
            caCertificate: ca.certificate,
            revocation: RevocationListFile(path: ca.crlPath.path, caCertificate: ca.certificate))
        XCTAssertEqual(validator.validate(chain: [cert]), .accepted(schoolID: "lincoln-high", serial: PandoIdentity.hex(cert.serialNumber)))
        try ca.revoke(schoolID: "lincoln-high")
        guard case .rejected(let reason) = validator.validate(chain: [cert]) else { return XCTFail() }
        XCTAssertTrue(reason.contains("revoked"), reason)
        XCTAssertThrowsError(try ca.revoke(schoolID: "nobody"))
        let replacement = try ca.issueSchool(id: "lincoln-high")
        XCTAssertEqual(validator.validate(chain: [replacement]),
                       .accepted(schoolID: "lincoln-high", serial: PandoIdentity.hex(replacement.serialNumber)))
        let list = try ca.list()
        XCTAssertEqual(list.map(\.kind), ["ca", "coordinator", "school", "school"])
        XCTAssertNotNil(list[2].revokedAt)

        // A coordinator certificate is not a school certificate.
        let coordinator = try Certificate(pemEncoded: String(contentsOf: pki.dir.appendingPathComponent("coordinator/coordinator.pem"), encoding: .utf8))
        guard case .rejected(let r2) = validator.validate(chain: [coordinator]) else { return XCTFail() }
        XCTAssertTrue(r2.contains("clientAuth"), r2)
    }

    func testCRLIsStandardAndTamperingIsDetected() throws {
        let pki = try TestPKI()
        try pki.ca.issueSchool(id: "a")
        try pki.ca.issueSchool(id: "b")
        try pki.ca.revoke(schoolID: "a")
        let bytes = try [UInt8](Data(contentsOf: pki.ca.crlPath))
        let crl = try RevocationList(verifying: bytes, caCertificate: pki.ca.certificate)
        XCTAssertEqual(crl.entries.count, 1)
        XCTAssertEqual(crl.number, 2)
        // openssl reads and verifies it.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "crl", "-in", pki.ca.crlPath.path, "-CAfile", pki.ca.caPath.path, "-noout", "-text"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("Revoked Certificates") && text.contains("verify OK") || text.contains("verify ok"), text)

        // Another CA's signature is refused; a tampered file keeps the last good list.
        let rogue = try TestPKI(name: "Rogue")
        XCTAssertThrowsError(try RevocationList(verifying: bytes, caCertificate: rogue.ca.certificate))
        let file = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate)
        XCTAssertEqual(file.current().list?.entries.count, 1)
        var der = try RevocationList(verifying: bytes, caCertificate: pki.ca.certificate)
            .derEncoded(caCertificate: pki.ca.certificate, caKey: .init())  // signed by the wrong key
        der[der.count - 3] ^= 1
        try Data(der).write(to: pki.ca.crlPath)
        let (list, warning) = file.current()
        XCTAssertEqual(list?.entries.count, 1)
        XCTAssertNotNil(warning)
    }
}
