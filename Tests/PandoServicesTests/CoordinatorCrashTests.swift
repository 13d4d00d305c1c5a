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

/// The child side: this test binary, re-run with `PANDO_COORDINATOR_CHILD_CONFIG` set, is a
/// `pando-coordinator` reading that YAML file; it runs rounds until the parent kills it.
final class CoordinatorChild: XCTestCase {
    func testRunCoordinatorFromEnvironment() async throws {
        guard let path = ProcessInfo.processInfo.environment["PANDO_COORDINATOR_CHILD_CONFIG"] else {
            throw XCTSkip("the entry point of CoordinatorCrashTests' coordinator process")
        }
        let configuration = try CoordinatorConfiguration.load(from: URL(fileURLWithPath: path))
        let coordinator = Coordinator(configuration: configuration, logger: Logger(label: "child"))
        coordinator.reconnectGrace = .seconds(1)
        if ProcessInfo.processInfo.environment["PANDO_COORDINATOR_CHILD_SIGNALS"] != nil {
            ServiceSignals.install { coordinator.shutdown(reason: $0) }  // as pando-coordinator does
        }
        _ = try await coordinator.run()
    }
}

/// The coordinator SIGKILLed while schools upload, while updates are being aggregated, and
/// while a version is being committed; restarted each time on the same state folder.
final class CoordinatorCrashTests: XCTestCase {
    func testKilledDuringUploadsAggregationAndCommitRecoversAndGoesOn() async throws {
        // Slow links of different speeds (~0.6, 1.2 and 1.8 s per upload): uploads overlap,
        // and the first update is folded in well before the last arrives.
        let fixture = try ChildCoordinatorFixture(prefix: "pando-coordinator-crash", federationID: "crash-test") { 40 * ($0 + 1) }
        let state = fixture.state, audit = fixture.audit, schools = fixture.schools
        func events() -> [String] { fixture.events() }
        func partialUploads() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("incoming").path)) ?? []).contains { $0.hasSuffix(".partial") }
        }
        func staging() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("versions").path)) ?? []).contains { $0.hasPrefix(".staging-") }
        }
        func launch() throws -> Process { try fixture.launch() }
        /// Polls (every millisecond, at most 60 s) until `condition` holds.
        func wait(_ what: String, _ condition: () -> Bool) -> Bool {
            let start = Date()
            while !condition() {
                if Date().timeIntervalSince(start) > 60 { return false }
                usleep(1000)
            }
            return true
        }

        var committedBefore = 0
        var caught: [String] = []
        let phases: [(String, () -> Bool)] = [
            ("uploads", { partialUploads() }),
            ("aggregation", { events().last == "updateReceived" }),
            ("commit", { staging() }),
        ]
        for (phase, condition) in phases {
            let child = try launch()
            // Let the restarted coordinator commit a round first: the federation goes on.
            let resumed = wait("a commit") { events().filter { $0 == "roundCommitted" }.count > committedBefore }
            XCTAssertTrue(resumed, "\(phase): the coordinator committed a round after (re)starting")
            if wait(phase, condition) { caught.append(phase) }
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            XCTAssertEqual(child.terminationReason, .uncaughtSignal, "\(phase): killed, not failed")

            // Reopen the state exactly as a restarted coordinator does, then check it.
            let ledger = try CoordinatorLedger(folder: state)
            XCTAssertNil(try ledger.roundInFlight(), "\(phase): the interrupted round is recorded as aborted")
            let head = try XCTUnwrap(ledger.head())
            XCTAssertTrue(ledger.store.hasWeights(head.id))
            XCTAssertEqual(try Digest.sha256(fileAt: ledger.store.weights(of: head.id)), head.id, "\(phase): head weights intact")
            for v in try ledger.versions() where ledger.store.hasWeights(v.id) {
                XCTAssertEqual(try Digest.sha256(fileAt: ledger.store.weights(of: v.id)), v.id, "\(phase): version \(v.id.prefix(12))")
            }
            XCTAssertFalse(staging(), "\(phase): no half-written version left after reopening")
            committedBefore = try ledger.rounds().filter { $0.status == .committed }.count
            ledger.close()
            let logs = schools.map { state.appendingPathComponent("schools/\($0).jsonl") }.filter { FileManager.default.fileExists(atPath: $0.path) }
            let report = AuditVerifier.verify(log: audit, key: try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub")),
                                              clientLogs: logs, checkpoints: state)
            XCTAssertTrue(report.isValid, "\(phase): \(report.problems)")
        }
        XCTAssertTrue(caught.contains("uploads") && caught.contains("aggregation"), "phases hit: \(caught)")
        print("coordinator SIGKILLed during: \(caught.joined(separator: ", ")); \(committedBefore) rounds committed across restarts")

        // A final restart goes on from the last committed version.
        let child = try launch()
        XCTAssertTrue(wait("a commit") { events().filter { $0 == "roundCommitted" }.count > committedBefore })
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
    }
}
