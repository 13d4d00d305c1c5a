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
}

final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: TLSAttack.Outcome?
    var value: TLSAttack.Outcome? {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}
