import Foundation
import Logging
import PandoCertificates
import PandoData
import PandoEngine
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// The child side: this test binary, re-run with `PANDO_SCHOOL_CHILD_CONFIG` set, is a
/// `pando-client` reading that YAML file; it serves until the parent kills it.
final class SchoolChild: XCTestCase {
    func testRunSchoolFromEnvironment() async throws {
        guard let path = ProcessInfo.processInfo.environment["PANDO_SCHOOL_CHILD_CONFIG"] else {
            throw XCTSkip("the entry point of KillTests' school processes")
        }
        let configuration = try SchoolConfiguration.load(from: URL(fileURLWithPath: path))
        let agent = try SchoolAgent(configuration: configuration, logger: Logger(label: "child"))
        // Hold each update for a moment before offering it, so a kill can land mid-round.
        agent.tamper = { _ in Thread.sleep(forTimeInterval: 2) }
        try await agent.run()
    }
}

/// Schools as separate processes killed with SIGKILL mid-round.
final class KillTests: XCTestCase {
    final class Children: @unchecked Sendable {
        let lock = NSLock()
        var processes: [String: Process] = [:]
        let binary: URL
        let configs: [String: URL]
        init(binary: URL, configs: [String: URL]) { self.binary = binary; self.configs = configs }

        func start(_ school: String) throws {
            let p = try ChildProcesses.start(binary, test: "PandoServicesTests.SchoolChild/testRunSchoolFromEnvironment",
                                             environment: ["PANDO_SCHOOL_CHILD_CONFIG": configs[school]!.path])
            lock.lock(); processes[school] = p; lock.unlock()
        }

        func kill(_ school: String) {
            lock.lock(); let p = processes.removeValue(forKey: school); lock.unlock()
            guard let p else { return }
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }

        func killAll() { for s in configs.keys { kill(s) } }
    }

    func testKilledSchoolIsLeftOutThenRejoinsAndAllKilledAbortsTheRound() async throws {
        let binary = try ChildProcesses.testBinary()
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-kill")
        let model = try TestFixtures.tinyModelFolder()
        let pki = work.appendingPathComponent("pki")
        let ca = try CertificateAuthority.initialise(at: pki, districtName: "Kill Test District")
        try ca.issueCoordinator(hosts: ["localhost", "127.0.0.1"])
        let schools = ["east", "north", "west"]
        for s in schools { try ca.issueSchool(id: s) }

        var config = Federation.configuration(model: model, state: work.appendingPathComponent("state"), rounds: 3)
        config.listen = "127.0.0.1"
        config.port = 0
        config.certificate = pki.appendingPathComponent("coordinator/coordinator.pem")
        config.privateKey = pki.appendingPathComponent("coordinator/coordinator-key.pem")
        config.caCertificate = pki.appendingPathComponent("ca.pem")
        config.revocationList = pki.appendingPathComponent("crl.pem")
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let coordinator = Coordinator(configuration: config, logger: logs.logger("coordinator"))
        coordinator.reconnectGrace = .seconds(1)

        let port = AsyncStream.makeStream(of: Int.self)
        coordinator.onListening = { port.continuation.yield($0); port.continuation.finish() }
        let running = Task { try await coordinator.run() }
        var it = port.stream.makeAsyncIterator()
        let next = await it.next()
        let listening = try XCTUnwrap(next)

        // Each school: its data as a CSV file and a YAML configuration, as a district would set it up.
        var configs: [String: URL] = [:]
        for (i, s) in schools.enumerated() {
            let csv = "text,label\n" + synthetic(count: 40 + 20 * i, seed: UInt64(i + 7)).map { "\($0.text),\($0.label)" }.joined(separator: "\n") + "\n"
            let dir = work.appendingPathComponent(s)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try csv.write(to: dir.appendingPathComponent("data.csv"), atomically: true, encoding: .utf8)
            let yaml = """
            school:
              data: data.csv
              validation_fraction: 0
            federation:
              id: test-federation
              task: classification
              labels: [a, b]
              base_model: \(model.path)
            coordinator: {host: 127.0.0.1, port: \(listening), server_name: localhost}
            tls:
              folder: \(pki.appendingPathComponent("schools/\(s)").path)
            cache: cache
            log: \(work.appendingPathComponent("state/schools/\(s).jsonl").path)
            """
            let url = dir.appendingPathComponent("school.yaml")
            try yaml.write(to: url, atomically: true, encoding: .utf8)
            configs[s] = url
        }
        let children = Children(binary: binary, configs: configs)
        defer { children.killAll() }
        // Round 2: kill west as soon as it is asked. Round 3: kill everyone.
        coordinator.onProgress = { line in
            if line.hasPrefix("round 2:") && line.contains("assignment sent") { children.kill("west") }
            if line.hasPrefix("round 3:") && line.contains("assignment sent") { children.killAll() }
        }
        // West comes back after round 2 and takes part in round 3's selection.
        coordinator.onRound = { r in if r.round == 2 { try? children.start("west") } }
        for s in schools { try children.start(s) }

        let reports = try await running.value
        XCTAssertEqual(reports.count, 3)
        XCTAssertTrue(reports[0].committed)
        XCTAssertEqual(reports[0].accepted.sorted(), schools)

        XCTAssertTrue(reports[1].committed, "two of three meet the quorum: \(reports[1].leftOut)")
        XCTAssertEqual(reports[1].accepted.sorted(), ["east", "north"])
        XCTAssertEqual(reports[1].leftOut["west"], "disconnected during the round")

        XCTAssertEqual(reports[2].selected.sorted(), schools, "west rejoined")
        XCTAssertFalse(reports[2].committed)
        XCTAssertEqual(reports[2].version, reports[1].version, "the previous version is kept")
        XCTAssertEqual(Set(reports[2].leftOut.keys), Set(schools))

        let ledger = try CoordinatorLedger(folder: config.stateFolder, readOnly: true)
        XCTAssertEqual(try ledger.head()?.id, reports[1].version)
        XCTAssertEqual(try ledger.rounds().map(\.status), [.committed, .committed, .aborted])
        let schoolLogs = schools.map { work.appendingPathComponent("state/schools/\($0).jsonl") }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
        let report = AuditVerifier.verify(log: config.stateFolder.appendingPathComponent("audit.jsonl"),
                                          key: try AuditPublicKey.load(from: config.stateFolder.appendingPathComponent("keys/coordinator.key.pub")),
                                          clientLogs: schoolLogs, checkpoints: config.stateFolder)
        XCTAssertTrue(report.isValid, "\(report.problems)")
        XCTAssertEqual(report.clientEntriesChecked, 5, "3 updates in round 1, 2 in round 2")
    }
}
