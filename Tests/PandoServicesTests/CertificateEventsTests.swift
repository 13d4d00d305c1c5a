import Foundation
import Logging
import PandoCertificates
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// Certificate events are audited (issue 17, item 11): what `pando certs` does to the CA is
/// written to the CA's own log, signed with the CA key, and `pando audit verify --ca-log`
/// checks it and the coordinator's schools against it.
final class CertificateEventsTests: XCTestCase {
    func events(_ log: CAEventLog) -> [String] {
        log.records.map { r in [r.eventName ?? "?", r.certificateKind, r.school, r.crlNumber.map { "crl \($0)" }].compactMap { $0 }.joined(separator: " ") }
    }

    /// A minimal coordinator state whose round selected `school` with `serial`.
    func coordinatorLog(selecting school: String, serial: String) throws -> (URL, AuditPublicKey) {
        let folder = try TestFixtures.temporaryDirectory(prefix: "pando-ca-coordinator")
        let ledger = try CoordinatorLedger(folder: folder)
        let base = try ledger.store.stage { folder in
            try Data("{}".utf8).write(to: folder.appendingPathComponent("config.json"))
            try Data("weights".utf8).write(to: folder.appendingPathComponent("model.safetensors"))
        }
        try ledger.createFederation(id: "f", name: "f", task: "classification", base: base)
        let round = try ledger.startRound(strategy: "fedavg")
        try ledger.record(AuditEntry(event: .schoolSelected, round: round.number, school: school, certificateSerial: serial))
        let url = ledger.auditURL
        ledger.close()
        return (url, try AuditPublicKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder).appendingPathExtension("pub")))
    }

    func testEveryCertificateEventIsInTheSignedCALog() throws {
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-ca-events").appendingPathComponent("certs")
        let ca = try CertificateAuthority.initialise(at: dir, districtName: "Riverside")
        let log = try CertificateEvents.open(ca)
        XCTAssertEqual(try CertificateEvents.record(ca, in: log), 2)
        try ca.issueCoordinator(hosts: ["localhost"])
        try ca.issueSchool(id: "north")
        try ca.issueSchool(id: "south")
        try CertificateEvents.record(ca, in: log)
        try ca.revoke(schoolID: "south")
        try CertificateEvents.record(ca, in: log)
        try ca.refreshCRL()
        try CertificateEvents.record(ca, in: log)
        XCTAssertEqual(try CertificateEvents.record(ca, in: log), 0, "nothing new: nothing written")
        XCTAssertEqual(events(log), ["certificateIssued ca", "crlPublished crl 1", "certificateIssued coordinator",
                                     "certificateIssued school north", "certificateIssued school south",
                                     "certificateRevoked school south", "crlPublished crl 2", "crlPublished crl 3"])
        XCTAssertThrowsError(try CertificateEvents.open(ca), "one command at a time") { XCTAssertTrue("\($0)".contains("in use"), "\($0)") }
        log.close()

        let north = try XCTUnwrap(try ca.list().first { $0.name == "north" })
        let (audit, key) = try coordinatorLog(selecting: "north", serial: north.serial)
        let caKey = try CertificateEvents.verifyingKey(caCertificate: ca.caPath)
        let certificates = AuditVerifier.CertificateLog(url: log.url, key: caKey)
        let report = AuditVerifier.verify(log: audit, key: key, certificates: certificates)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.caValidSignatures, 8)

        // The Python checker reads the same log with ca.pem.
        let python = try PythonChecker.run(["--ca-log", log.url.path, ca.caPath.path])
        XCTAssertEqual(python.status, 0, python.output)

        // A changed record (another school named), a dropped one, and a log signed by another CA.
        var lines = try String(contentsOf: log.url, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[3] = lines[3].replacingOccurrences(of: #""school":"north""#, with: #""school":"norht""#)
        try (lines.joined(separator: "\n") + "\n").write(to: log.url, atomically: true, encoding: .utf8)
        let edited = AuditVerifier.verify(log: audit, key: key, certificates: certificates)
        XCTAssertTrue(edited.problems.contains { $0.file == CAEventLog.fileName && $0.line == 4 && $0.message.contains("signature does not verify") },
                      edited.render())
        XCTAssertNotEqual(try PythonChecker.run(["--ca-log", log.url.path, ca.caPath.path]).status, 0)
        lines.remove(at: 3)
        try (lines.joined(separator: "\n") + "\n").write(to: log.url, atomically: true, encoding: .utf8)
        let dropped = AuditVerifier.verify(log: audit, key: key, certificates: certificates)
        XCTAssertTrue(dropped.problems.contains { $0.file == CAEventLog.fileName && $0.message.contains("expected 4") }, dropped.render())
        let other = try CertificateAuthority.initialise(at: dir.deletingLastPathComponent().appendingPathComponent("other"), districtName: "Other")
        let foreign = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: log.url, key: try CertificateEvents.verifyingKey(caCertificate: other.caPath)))
        XCTAssertTrue(foreign.notes.contains { $0.message.contains("the district CA's key (ca.pem)") }, foreign.render())
    }

    /// A CA folder older than its log (or a command cut short before its record): the next
    /// command writes what the log lacks, saying it was recorded late.
    func testEventsTheLogLacksAreRecordedLate() throws {
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-ca-late").appendingPathComponent("certs")
        let ca = try CertificateAuthority.initialise(at: dir, districtName: "Riverside")
        try ca.issueSchool(id: "north")
        try ca.revoke(schoolID: "north")
        let log = try CertificateEvents.open(ca)
        XCTAssertEqual(try CertificateEvents.record(ca, in: log, late: true), 4)
        XCTAssertEqual(events(log), ["certificateIssued ca", "certificateIssued school north", "certificateRevoked school north", "crlPublished crl 2"])
        XCTAssertTrue(log.records.allSatisfy { ($0.reason ?? "").hasPrefix("recorded late") })
    }

    /// Over a real federation: every school the coordinator selected holds a certificate the
    /// CA log issued to it (the selection records the serial); a school the CA log never
    /// issued, or one selected after the CA revoked its certificate, is a problem.
    func testVerifyChecksTheCoordinatorsSchoolsAgainstTheCALog() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-ca-federation")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"),
                                                logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
        let reports = try await federation.run()
        XCTAssertTrue(reports.first?.committed ?? false)
        let ca = try CertificateAuthority(directory: federation.certificates)
        let log = try CertificateEvents.open(ca)
        try CertificateEvents.record(ca, in: log, late: true)
        log.close()
        let audit = state.appendingPathComponent("audit.jsonl")
        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let caKey = try CertificateEvents.verifyingKey(caCertificate: ca.caPath)
        let selections = try AuditRecord.readAll(audit).records.filter { $0.event == .schoolSelected }
        XCTAssertEqual(selections.count, 3)
        XCTAssertTrue(selections.allSatisfy { $0.certificateSerial != nil }, "each selection names the certificate")
        let ok = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: log.url, key: caKey))
        XCTAssertTrue(ok.isValid, ok.render())

        let objects = log.records.map(\.object)
        func variant(_ name: String, _ edit: ([[String: CanonicalJSON]]) -> [[String: CanonicalJSON]]) throws -> URL {
            let url = work.appendingPathComponent(name)
            try AuditFormat.resealed(edit(objects), key: CertificateEvents.signer(for: ca)).write(to: url)
            return url
        }
        let noWest = try variant("no-west.jsonl") { $0.filter { $0["school"]?.stringValue != "west" } }
        let missing = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: noWest, key: caKey))
        XCTAssertTrue(missing.problems.contains { $0.file == "audit.jsonl" && $0.message.contains("school west is in the coordinator's log")
            && $0.message.contains("records no certificate issued to it") }, missing.render())
        let westSerial = try XCTUnwrap(selections.first { $0.school == "west" }?.certificateSerial)
        let revoked = try variant("revoked.jsonl") { objects in
            objects + [["event": "certificateRevoked", "certificateKind": "school", "school": "west", "subject": "west",
                        "certificateSerial": .string(westSerial), "revokedAt": "2001-01-01T00:00:00.000Z", "time": "2001-01-01T00:00:00.000Z"]]
        }
        let late = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: revoked, key: caKey))
        XCTAssertTrue(late.problems.contains { $0.message.contains("school west was selected at") && $0.message.contains("which the CA revoked at 2001-01-01") },
                      late.render())
        let expired = try variant("expired.jsonl") { objects in
            objects.map { o in
                guard o["certificateSerial"]?.stringValue == westSerial else { return o }
                var o = o
                o["notAfter"] = "2001-01-01T00:00:00.000Z"
                return o
            }
        }
        let old = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: expired, key: caKey))
        XCTAssertTrue(old.problems.contains { $0.message.contains("school west was selected at") && $0.message.contains("expired at 2001-01-01") }, old.render())
        // The CA log's own consistency: a revocation of a serial it never issued, a CRL number that goes back.
        let inconsistent = try variant("inconsistent.jsonl") { objects in
            objects + [["event": "certificateRevoked", "certificateKind": "school", "school": "west", "certificateSerial": "0bad",
                        "revokedAt": "2030-01-01T00:00:00.000Z", "time": "2030-01-01T00:00:00.000Z"],
                       ["event": "crlPublished", "crlNumber": 1, "time": "2030-01-01T00:00:00.000Z"]]
        }
        let own = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: inconsistent, key: caKey))
        XCTAssertTrue(own.problems.contains { $0.file == "inconsistent.jsonl" && $0.message.contains("revokes serial 0bad, which no earlier record issues") }, own.render())
        XCTAssertTrue(own.problems.contains { $0.file == "inconsistent.jsonl" && $0.message.contains("CRL numbers only rise") }, own.render())
        // A certificate event in the coordinator's own log must be in the CA's.
        let ledger = try CoordinatorLedger(folder: state)
        try ledger.record(AuditEntry(event: .certificateRevoked, school: "west", certificateSerial: "0bad", reason: "said the coordinator"))
        ledger.close()
        let claimed = AuditVerifier.verify(log: audit, key: key, certificates: .init(url: log.url, key: caKey))
        XCTAssertTrue(claimed.problems.contains { $0.file == "audit.jsonl" && $0.message.contains("certificateRevoked of west (serial 0bad) is not in") },
                      claimed.render())
    }
}
