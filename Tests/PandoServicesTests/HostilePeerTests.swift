import Foundation
import Logging
import PandoCertificates
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTransport
import PandoWire
import XCTest

/// Hostile peers against the running coordinator service (issue 17).
final class HostilePeerTests: XCTestCase {
    /// A client presenting `[own RSA-1024 leaf, copy of a school's certificate]` is refused,
    /// the refusal is in the signed audit log, and the federation runs on with the real schools.
    func testBorrowedIdentityIsRefusedAndAudited() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-hostile")
        let state = work.appendingPathComponent("state")
        let model = try TestFixtures.tinyModelFolder()
        var config = Federation.configuration(model: model, state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        let victim = CertificateAuthority.schoolDirectory(federation.certificates, id: "north").appendingPathComponent("school.pem")
        let rsa = try TLSAttack.rsaCertificate(bits: 1024, in: work, name: "attacker")
        let hello = Array(buffer: try WireCodec.frame(.hello(Hello(softwareVersion: PandoTransportInfo.softwareVersion))))
        let outcome = OutcomeBox()
        federation.coordinator.onListening = { port in
            // Before any school dials in: the attacker tries to log in as "north".
            let done = DispatchSemaphore(value: 0)
            Task.detached {
                outcome.value = try? await TLSAttack.dial(port: port, chain: [rsa.certificate, victim], key: rsa.key, payload: hello)
                done.signal()
            }
            done.wait()
        }
        let reports = try await federation.run()
        guard case .refused = outcome.value else { return XCTFail("the borrowed chain was not refused: \(String(describing: outcome.value))") }
        XCTAssertTrue(reports.first?.committed ?? false, "the round with the real schools commits")
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let refused = records.filter { $0.event == .connectionRefused }
        XCTAssertEqual(refused.count, 1, "\(records.map { $0.eventName ?? "?" })")
        let reason = refused.first?.reason ?? ""
        XCTAssertTrue(reason.contains("127.0.0.1"), reason)
        let refusedAt = refused.first?.seq ?? 0
        let earlierNorth = records.filter { r in r.event == .schoolSelected && r.school == "north" && (r.seq ?? 0) < refusedAt }
        XCTAssertEqual(earlierNorth.count, 0, "the attacker was selected as north")
        let verification = AuditVerifier.verify(log: state.appendingPathComponent("audit.jsonl"),
                                                key: try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub")))
        XCTAssertTrue(verification.isValid, "\(verification.problems)")
    }


    /// A school revoked while connected (issue 17, item 2): its live session is closed, round 2
    /// neither selects it nor accepts anything from it, and the audit says why.
    func testSchoolRevokedBetweenRoundsIsClosedAndNotSelected() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-revoke")
        let state = work.appendingPathComponent("state")
        let model = try TestFixtures.tinyModelFolder()
        var config = Federation.configuration(model: model, state: state, rounds: 2)
        config.rounds.minSchools = 2
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        federation.coordinator.transport.revalidationInterval = .milliseconds(100)
        let pki = federation.certificates
        federation.coordinator.onRound = { report in
            guard report.round == 1 else { return }
            Thread.sleep(forTimeInterval: 0.3)  // every school is connected by now (round 1 may have started with two)
            // Between the rounds, the district revokes "west" (its session is still open).
            do { _ = try CertificateAuthority(directory: pki).revoke(schoolID: "west") } catch { XCTFail("revoke: \(error)") }
            Thread.sleep(forTimeInterval: 0.5)  // the revalidation timer closes its session meanwhile
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.count, 2)
        guard reports.count == 2 else { return }
        XCTAssertFalse(reports[1].selected.contains("west"), "a revoked school was selected: \(reports[1].selected)")
        XCTAssertFalse(reports[1].accepted.contains("west"))
        XCTAssertTrue(reports[1].committed)
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let round2Start = try XCTUnwrap(records.first { $0.event == .roundStarted && $0.round == 2 }?.seq)
        let closed = records.filter { $0.event == .connectionRefused && $0.school == "west" }
        XCTAssertFalse(closed.isEmpty, "no audit record says why west is out")
        XCTAssertTrue(closed.allSatisfy { ($0.reason ?? "").contains("revoked") }, "\(closed.map { $0.reason ?? "" })")
        let west2 = records.filter { r in r.round == 2 && r.school == "west" && (r.event == .schoolSelected || r.event == .updateReceived) }
        XCTAssertEqual(west2.count, 0)
        XCTAssertTrue(closed.contains { ($0.seq ?? 0) < round2Start }, "the session was closed before round 2 began")
        XCTAssertTrue(logs.lines.contains { $0.contains("closing the session of school west") }, logs.lines.suffix(20).joined(separator: "\n"))
    }
}

final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: TLSAttack.Outcome?
    var value: TLSAttack.Outcome? {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}
