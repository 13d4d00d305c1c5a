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
        _ = try await coordinator.run()
    }
}

/// The coordinator SIGKILLed while schools upload, while updates are being aggregated, and
/// while a version is being committed; restarted each time on the same state folder.
final class CoordinatorCrashTests: XCTestCase {
    func testKilledDuringUploadsAggregationAndCommitRecoversAndGoesOn() async throws {
        let binary = try ChildProcesses.testBinary()
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-coordinator-crash")
        let model = try TestFixtures.tinyModelFolder()
        let pki = work.appendingPathComponent("pki")
        let ca = try CertificateAuthority.initialise(at: pki, districtName: "Crash Test District")
        try ca.issueCoordinator(hosts: ["localhost", "127.0.0.1"])
        let schools = ["east", "north", "west"]
        for s in schools { try ca.issueSchool(id: s) }
        let (held, port) = try ChildProcesses.loopbackListener()
        close(held)  // free again: the coordinator child binds it
        let state = work.appendingPathComponent("state")
        let yaml = """
        federation: {id: crash-test, task: classification, labels: [a, b], base_model: \(model.path), rounds: 1000}
        selection: {min_schools: 3, quorum: 2, round_deadline_seconds: 60, federated_evaluation: false}
        local: {epochs: 1, learning_rate: 1.0e-3, batch_size: 16, max_length: 24, dropout: false}
        coordinator:
          listen: 127.0.0.1
          port: \(port)
          state: \(state.path)
          certificate: \(pki.path)/coordinator/coordinator.pem
          key: \(pki.path)/coordinator/coordinator-key.pem
          ca: \(pki.path)/ca.pem
        """
        let configURL = work.appendingPathComponent("coordinator.yaml")
        try yaml.write(to: configURL, atomically: true, encoding: .utf8)

        // The schools live in this process for the whole test and reconnect after every kill.
        var agents: [Task<Void, Error>] = []
        defer { agents.forEach { $0.cancel() } }
        for (i, s) in schools.enumerated() {
            var transport = SchoolTransportConfiguration.fromSchoolFolder(pki.appendingPathComponent("schools/\(s)").path,
                                                                          coordinatorHost: "127.0.0.1", port: port)
            transport.serverName = "localhost"
            transport.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(300))
            transport.limits.chunkSize = 8 << 10
            var format = DataFormat(task: .classification)
            format.policy = .fail
            let config = SchoolConfiguration(data: work, format: format, labels: Federation.labels, baseModel: model,
                                             transport: transport, cache: work.appendingPathComponent("cache-\(s)"),
                                             log: state.appendingPathComponent("schools/\(s).jsonl"))
            let agent = try SchoolAgent(configuration: config, training: Federation.dataset(synthetic(count: 40 + 10 * i, seed: UInt64(i))),
                                        validation: nil, logger: Logger(label: "school", factory: { _ in SwiftLogNoOpLogHandler() }))
            // Slow links of different speeds (~0.6, 1.2 and 1.8 s per upload): uploads overlap,
            // and the first update is folded in well before the last arrives.
            let pace = 40 * (i + 1)
            agent.uploadPacing = { _, _ in try? await Task.sleep(for: .milliseconds(pace)) }
            agents.append(Task { try await agent.run() })
        }

        let audit = state.appendingPathComponent("audit.jsonl")
        func events() -> [String] {
            ((try? String(contentsOf: audit, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["event"] as? String
            }
        }
        func partialUploads() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("incoming").path)) ?? []).contains { $0.hasSuffix(".partial") }
        }
        func staging() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("versions").path)) ?? []).contains { $0.hasPrefix(".staging-") }
        }
        func launch() throws -> Process {
            try ChildProcesses.start(binary, test: "PandoServicesTests.CoordinatorChild/testRunCoordinatorFromEnvironment",
                                     environment: ["PANDO_COORDINATOR_CHILD_CONFIG": configURL.path])
        }
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
