import Foundation
import Logging
import PandoCertificates
import PandoData
import PandoEngine
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import PandoTransport
import XCTest

/// The coordinator as a long-running service (issue 17, item 13): it waits for schools as
/// long as it takes, a failed round ends that round only, and SIGTERM stops it cleanly.
final class ServiceLifecycleTests: XCTestCase {
    /// `min_schools` are not connected within `wait_for_schools_seconds`: the coordinator says
    /// so and keeps waiting; the late school arrives and the round runs.
    func testKeepsWaitingForSchools() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-wait")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.minSchools = 4
        config.rounds.waitForSchools = .milliseconds(300)
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        try CertificateAuthority(directory: federation.certificates).issueSchool(id: "late")
        let late = TaskBox()
        federation.coordinator.onListening = { port in
            let config = federation.schoolConfiguration("late", port: port)
            late.set(Task {
                try await Task.sleep(for: .seconds(1.5))  // five wait periods late
                let agent = try SchoolAgent(configuration: config, training: try Federation.dataset(synthetic(count: 30, seed: 9)),
                                            validation: nil, logger: LogCapture().logger("late"))
                try await agent.run()
            })
        }
        let reports = try await federation.run()
        late.cancel()
        XCTAssertEqual(reports.count, 1)
        XCTAssertTrue(reports.first?.committed ?? false)
        XCTAssertTrue(reports.first?.accepted.contains("late") ?? false)
        XCTAssertTrue(logs.contains("still waiting: 3 of the 4 schools"), logs.lines.suffix(10).joined(separator: "\n"))
    }

    /// An error inside a round (here the commit observer, standing for a disk or ledger error)
    /// ends that round; the coordinator goes on with the next one.
    func testAFailedRoundDoesNotEndTheService() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-round-error")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        federation.coordinator.retryAfterFailure = .milliseconds(100)
        let calls = PortBox()
        federation.coordinator.observeCommit = { _ in
            calls.value += 1
            if calls.value == 1 { throw RoundError("disk full (injected)") }
            return [:]
        }
        let reports = try await federation.run()
        XCTAssertEqual(calls.value, 2, "the second round ran after the first failed")
        XCTAssertEqual(reports.map(\.round), [2])
        XCTAssertTrue(logs.contains("the round failed: disk full (injected)"), logs.lines.suffix(10).joined(separator: "\n"))
    }

    /// SIGTERM to a coordinator process mid-round: it aborts the round with the reason on
    /// record, says goodbye, and exits 0; nothing is left in flight.
    func testSIGTERMAbortsTheOpenRoundAndExitsCleanly() async throws {
        let fixture = try ChildCoordinatorFixture(prefix: "pando-sigterm", federationID: "signal-test") { _ in 60 }  // rounds take a while
        let child = try fixture.launch(signals: true)
        let audit = fixture.audit, state = fixture.state
        func events() -> [String] { fixture.events() }
        // Wait for a committed round, then for the next one to be under way.
        let start = Date()
        func nextRoundUnderWay() -> Bool {
            let e = events()
            return e.contains("roundCommitted") && (e.last == "schoolSelected" || e.last == "updateReceived")
        }
        while !nextRoundUnderWay(), Date().timeIntervalSince(start) < 60 {
            usleep(2000)
        }
        XCTAssertTrue(events().contains("roundCommitted"), "no round committed within 60 s: \(events())")
        kill(child.processIdentifier, SIGTERM)
        child.waitUntilExit()
        XCTAssertEqual(child.terminationReason, .exit, "SIGTERM must end the coordinator by itself, not kill it")
        XCTAssertEqual(child.terminationStatus, 0)
        let (records, _) = try AuditRecord.readAll(audit)
        let aborted = records.filter { $0.event == .roundAborted }
        XCTAssertEqual(aborted.count, 1, "\(records.map { $0.eventName ?? "" })")
        XCTAssertTrue(aborted.first?.reason?.contains("SIGTERM") ?? false, aborted.first?.reason ?? "")
        let ledger = try CoordinatorLedger(folder: state)
        defer { ledger.close() }
        XCTAssertNil(try ledger.roundInFlight())
        XCTAssertEqual(ledger.recovery.abortedRounds, [], "a restart finds nothing it has to abort")
    }
}
