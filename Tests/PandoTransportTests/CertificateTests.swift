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
        XCTAssertEqual(validator.validate(leaf: cert), .accepted(schoolID: "lincoln-high", serial: PandoIdentity.hex(cert.serialNumber)))
        try ca.revoke(schoolID: "lincoln-high")
        guard let reason = validator.validate(leaf: cert).reason else { return XCTFail() }
        XCTAssertTrue(reason.contains("revoked"), reason)
        XCTAssertThrowsError(try ca.revoke(schoolID: "nobody"))
        let replacement = try ca.issueSchool(id: "lincoln-high")
        XCTAssertEqual(validator.validate(leaf: replacement),
                       .accepted(schoolID: "lincoln-high", serial: PandoIdentity.hex(replacement.serialNumber)))
        let list = try ca.list()
        XCTAssertEqual(list.map(\.kind), ["ca", "coordinator", "school", "school"])
        XCTAssertNotNil(list[2].revokedAt)

        // A coordinator certificate is not a school certificate.
        let coordinator = try Certificate(pemEncoded: String(contentsOf: pki.dir.appendingPathComponent("coordinator/coordinator.pem"), encoding: .utf8))
        guard let r2 = validator.validate(leaf: coordinator).reason else { return XCTFail() }
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
        XCTAssertTrue(text.contains("Revoked Certificates") && (text.contains("verify OK") || text.contains("verify ok")), text)
        let issuedJSON = try String(contentsOf: pki.dir.appendingPathComponent("issued.json"), encoding: .utf8)
        XCTAssertTrue(issuedJSON.contains("\"crlNumber\" : 2"), issuedJSON)

        // Another CA's signature is refused.
        let rogue = try TestPKI(name: "Rogue")
        XCTAssertThrowsError(try RevocationList(verifying: bytes, caCertificate: rogue.ca.certificate))
    }

    /// A well-formed CRL signed by another key (same issuer name) keeps the last good list.
    func testCRLSignedByAnotherKeyKeepsLastGoodList() throws {
        let pki = try TestPKI()
        try pki.ca.issueSchool(id: "a")
        try pki.ca.revoke(schoolID: "a")
        let good = try pki.ca.currentCRL()
        let file = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate)
        XCTAssertEqual(file.current().list, good)
        var forged = good
        forged.number += 1
        forged.entries = []  // would un-revoke "a"
        try Data(forged.derEncoded(caCertificate: pki.ca.certificate, caKey: .init())).write(to: pki.ca.crlPath)
        let (list, warning) = file.current()
        XCTAssertEqual(list, good)
        XCTAssertTrue(warning?.contains("does not verify") ?? false, warning ?? "no warning")
    }

    /// The real CRL with one bit of its signature flipped keeps the last good list.
    func testCRLWithCorruptedSignatureKeepsLastGoodList() throws {
        let pki = try TestPKI()
        try pki.ca.issueSchool(id: "a")
        try pki.ca.revoke(schoolID: "a")
        let good = try pki.ca.currentCRL()
        let file = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate)
        XCTAssertEqual(file.current().list, good)
        let pem = try String(contentsOf: pki.ca.crlPath, encoding: .utf8)
        let base64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        var der = try [UInt8](XCTUnwrap(Data(base64Encoded: base64)))
        der[der.count - 3] ^= 1  // inside the ECDSA signature
        try Data(der).write(to: pki.ca.crlPath)
        XCTAssertThrowsError(try RevocationList(verifying: der, caCertificate: pki.ca.certificate))
        let (list, warning) = file.current()
        XCTAssertEqual(list, good)
        XCTAssertNotNil(warning)
    }

    /// Putting an older (validly signed) crl.pem back must not un-revoke a school.
    func testOlderCRLReplayIsRefused() throws {
        let pki = try TestPKI()
        let cert = try pki.ca.issueSchool(id: "victim")
        let old = try Data(contentsOf: pki.ca.crlPath)  // CRL 1: nothing revoked
        let reports = LogCapture()
        let file = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate) { reports.append($0) }
        let validator = SchoolCertificateValidator(caCertificate: pki.ca.certificate, revocation: file)
        XCTAssertEqual(validator.validate(leaf: cert), .accepted(schoolID: "victim", serial: PandoIdentity.hex(cert.serialNumber)))
        try pki.ca.revoke(schoolID: "victim")  // CRL 2
        guard let r1 = validator.validate(leaf: cert).reason else { return XCTFail("revoked school accepted") }
        XCTAssertTrue(r1.contains("revoked"), r1)
        try old.write(to: pki.ca.crlPath)  // replay CRL 1
        guard let r2 = validator.validate(leaf: cert).reason else { return XCTFail("replayed CRL un-revoked the school") }
        XCTAssertTrue(r2.contains("revoked"), r2)
        XCTAssertEqual(file.current().list?.number, 2)
        XCTAssertTrue(reports.contains("CRL number 1, older than number 2"), reports.lines.joined(separator: "\n"))
        XCTAssertEqual(reports.lines.filter { $0.contains("older than") }.count, 1, "reported once, not per handshake")
        // A newer CRL is taken up again.
        try pki.ca.refreshCRL()
        XCTAssertEqual(file.current().list?.number, 3)
        XCTAssertNil(file.current().warning)
    }

    /// The highest CRL number survives a restart (issue 17, item 9): accept CRL 2, restart with
    /// CRL 1 put back, and the revoked school stays refused. Without the number file (memory
    /// only) the restarted process would take CRL 1 and un-revoke it.
    func testOlderCRLIsRefusedAfterARestart() throws {
        let pki = try TestPKI()
        let cert = try pki.ca.issueSchool(id: "victim")
        let old = try Data(contentsOf: pki.ca.crlPath)  // CRL 1: nothing revoked
        try pki.ca.revoke(schoolID: "victim")  // CRL 2
        let numberFile = pki.dir.appendingPathComponent("crl-number.json").path
        let before = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate, numberFile: numberFile)
        XCTAssertEqual(before.current().list?.number, 2)
        let mode = try FileManager.default.attributesOfItem(atPath: numberFile)[.posixPermissions] as? NSNumber
        XCTAssertEqual(mode?.intValue, 0o600)

        try old.write(to: pki.ca.crlPath)  // put CRL 1 back while the process is down
        let reports = LogCapture()
        let restarted = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate, numberFile: numberFile) {
            reports.append($0)
        }
        let validator = SchoolCertificateValidator(caCertificate: pki.ca.certificate, revocation: restarted)
        guard let reason = validator.validate(leaf: cert).reason else { return XCTFail("the old CRL un-revoked the school after a restart") }
        XCTAssertTrue(reason.contains("CRL number 1, older than number 2"), reason)
        XCTAssertTrue(reports.contains("older than number 2"), reports.lines.joined(separator: "\n"))
        let memoryOnly = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate)
        XCTAssertEqual(memoryOnly.current().list?.number, 1, "what the number file prevents")

        // A newer list is taken up and its number recorded.
        try pki.ca.refreshCRL()  // CRL 3
        XCTAssertEqual(restarted.current().list?.number, 3)
        try old.write(to: pki.ca.crlPath)
        XCTAssertNil(RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate, numberFile: numberFile).current().list)

        // A number recorded for another CA (a new district CA counts from 1 again) does not apply.
        let other = try TestPKI(name: "New District CA")
        let fresh = RevocationListFile(path: other.ca.crlPath.path, caCertificate: other.ca.certificate, numberFile: numberFile)
        XCTAssertEqual(fresh.current().list?.number, 1)

        // An unreadable number file fails closed, naming the file.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: numberFile))
        let corrupt = RevocationListFile(path: other.ca.crlPath.path, caCertificate: other.ca.certificate, numberFile: numberFile)
        let (list, warning) = corrupt.current()
        XCTAssertNil(list)
        XCTAssertTrue(warning?.contains(numberFile) ?? false, warning ?? "no warning")
    }

    /// The CA never reuses a CRL number, even when crl.pem is missing or unreadable.
    func testCRLNumberIsKeptInTheLedger() throws {
        let pki = try TestPKI()
        try pki.ca.issueSchool(id: "a")
        try pki.ca.revoke(schoolID: "a")
        XCTAssertEqual(try pki.ca.currentCRL().number, 2)
        try Data("garbage".utf8).write(to: pki.ca.crlPath)
        try pki.ca.refreshCRL()
        XCTAssertEqual(try pki.ca.currentCRL().number, 3, "number continues from issued.json, not from 1")
        try FileManager.default.removeItem(at: pki.ca.crlPath)
        try CertificateAuthority(directory: pki.dir).refreshCRL()
        XCTAssertEqual(try pki.ca.currentCRL().number, 4)
        XCTAssertEqual(try pki.ca.currentCRL().entries.count, 1)
        // A folder from before the number was kept (issued.json a bare array) continues from crl.pem.
        let ledger = pki.dir.appendingPathComponent("issued.json")
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: ledger)) as? [String: Any])
        try JSONSerialization.data(withJSONObject: try XCTUnwrap(object["certificates"])).write(to: ledger)
        try pki.ca.issueSchool(id: "b")
        try pki.ca.revoke(schoolID: "b")
        XCTAssertEqual(try pki.ca.currentCRL().number, 5)
        XCTAssertEqual(try pki.ca.list().count, 4)
    }

    /// Past its nextUpdate the coordinator's CRL is stale: schools are refused (fail closed) with a
    /// clear reason; a school's copy (policy .warn) is still applied, with a warning.
    func testStaleCRLFailsClosedOnTheCoordinator() throws {
        let pki = try TestPKI()
        let cert = try pki.ca.issueSchool(id: "s")
        let later = Date().addingTimeInterval(CertificateAuthority.crlValidity + 86400)
        let reports = LogCapture()
        let file = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate) { reports.append($0) }
        let validator = SchoolCertificateValidator(caCertificate: pki.ca.certificate, revocation: file)
        guard let reason = validator.validate(leaf: cert, now: later).reason else { return XCTFail("stale CRL accepted") }
        XCTAssertTrue(reason.contains("is stale") && reason.contains("pando certs refresh-crl"), reason)
        XCTAssertTrue(reports.contains("is stale"))
        // Nearly stale: accepted, with a warning.
        let soon = Date().addingTimeInterval(CertificateAuthority.crlValidity - 86400)
        XCTAssertEqual(validator.validate(leaf: cert, now: soon), .accepted(schoolID: "s", serial: PandoIdentity.hex(cert.serialNumber)))
        XCTAssertTrue(reports.contains("expires at"))
        // School side: still applied.
        let schoolSide = RevocationListFile(path: pki.ca.crlPath.path, caCertificate: pki.ca.certificate, stalePolicy: .warn)
        let (list, warning) = schoolSide.current(now: later)
        XCTAssertNotNil(list)
        XCTAssertTrue(warning?.contains("still applying") ?? false)
        // A refreshed CRL (published "later") ends the refusal.
        try pki.ca.refreshCRL(now: later)
        XCTAssertEqual(validator.validate(leaf: cert, now: later), .accepted(schoolID: "s", serial: PandoIdentity.hex(cert.serialNumber)))
    }

    /// revoke writes the CRL before the ledger: if the CRL cannot be written the school is not
    /// shown as revoked, and running revoke again works (it is idempotent).
    func testRevokeWritesCRLFirstAndIsIdempotent() throws {
        let pki = try TestPKI()
        let cert = try pki.ca.issueSchool(id: "s")
        // Make crl.pem impossible to replace: a non-empty directory in its place.
        try FileManager.default.removeItem(at: pki.ca.crlPath)
        try FileManager.default.createDirectory(at: pki.ca.crlPath.appendingPathComponent("x"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try pki.ca.revoke(schoolID: "s"))
        XCTAssertNil(try pki.ca.list().first { $0.name == "s" }?.revokedAt, "ledger must not say revoked when the CRL was not written")
        try FileManager.default.removeItem(at: pki.ca.crlPath)
        let serials = try pki.ca.revoke(schoolID: "s")
        XCTAssertEqual(serials, [PandoIdentity.hex(cert.serialNumber)])
        XCTAssertNotNil(try pki.ca.currentCRL().revocationDate(of: cert.serialNumber))
        let n = try pki.ca.currentCRL().number
        // Again: no unknownSchool error; the CRL is republished.
        XCTAssertEqual(try pki.ca.revoke(schoolID: "s"), serials)
        XCTAssertEqual(try pki.ca.currentCRL().number, n + 1)
        XCTAssertNotNil(try pki.ca.currentCRL().revocationDate(of: cert.serialNumber))
        XCTAssertThrowsError(try pki.ca.revoke(schoolID: "never-issued"))
        // No temp files left behind by the atomic writes.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: pki.dir.path).filter { $0.hasSuffix(".tmp") }
        XCTAssertEqual(leftovers, [])
    }

    /// Re-issuing the coordinator certificate revokes the old one; school bundles carry crl.pem
    /// and the school-side validator refuses the old certificate.
    func testReissuingCoordinatorRevokesTheOldCertificate() throws {
        let pki = try TestPKI()
        let coordPEM = pki.dir.appendingPathComponent("coordinator/coordinator.pem")
        let old = try Certificate(pemEncoded: String(contentsOf: coordPEM, encoding: .utf8))
        let new = try pki.ca.issueCoordinator(hosts: ["localhost"])
        let school = try pki.school("s")
        let bundleCRL = school.appendingPathComponent("crl.pem")
        XCTAssertTrue(FileManager.default.fileExists(atPath: bundleCRL.path), "school bundle must include crl.pem")
        let validator = CoordinatorCertificateValidator(
            caCertificate: pki.ca.certificate,
            revocation: RevocationListFile(path: bundleCRL.path, caCertificate: pki.ca.certificate, stalePolicy: .warn))
        XCTAssertNil(validator.problem(leaf: new, serverName: "localhost"))
        let problem = validator.problem(leaf: old, serverName: "localhost")
        XCTAssertTrue(problem?.contains("was revoked at") ?? false, problem ?? "old coordinator certificate accepted")
        let coordinators = try pki.ca.list().filter { $0.kind == "coordinator" }
        XCTAssertEqual(coordinators.map { $0.revokedAt != nil }, [true, false])
        // Bundles issued earlier get the new CRL copied into their folder too.
        let other = try TestPKI()
        let early = try other.school("early")
        try other.ca.issueCoordinator(hosts: ["localhost"])
        let copy = try RevocationList(verifying: [UInt8](Data(contentsOf: early.appendingPathComponent("crl.pem"))),
                                      caCertificate: other.ca.certificate)
        XCTAssertEqual(copy, try other.ca.currentCRL())
    }

    func testInsecureKeyFilesAreRefused() throws {
        let pki = try TestPKI()
        let caKey = pki.dir.appendingPathComponent("ca-key.pem").path
        chmod(caKey, 0o644)
        XCTAssertThrowsError(try CertificateAuthority(directory: pki.dir)) { e in
            XCTAssertTrue("\(e)".contains(caKey) && "\(e)".contains("chmod 600"), "\(e)")
        }
        chmod(caKey, 0o600)
        XCTAssertNoThrow(try CertificateAuthority(directory: pki.dir))
    }
}
