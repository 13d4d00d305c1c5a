import Foundation
import Logging
import PandoCertificates
import PandoData
import PandoEngine
import PandoFederation
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import PandoTransport
import XCTest

enum Federation {
    static let labels = ["a", "b"]

    /// A tiny-model federation configuration with short deadlines (TLS fields are filled by `LoopbackFederation`).
    static func configuration(model: URL, state: URL, rounds: Int = 2, strategy: StrategyChoice = StrategyChoice()) -> CoordinatorConfiguration {
        var c = CoordinatorConfiguration(federationID: "test-federation", task: .classification, labels: labels, baseModel: model,
                                         stateFolder: state, certificate: state, privateKey: state, caCertificate: state,
                                         revocationList: state)
        c.rounds.rounds = rounds
        c.rounds.minSchools = 3
        c.rounds.quorum = 2
        c.rounds.roundDeadline = .seconds(120)
        c.rounds.waitForSchools = .seconds(60)
        c.rounds.evaluationDeadline = .seconds(60)
        c.plan.epochs = 2
        c.plan.learningRate = 1e-3
        c.plan.batchSize = 16
        c.plan.maxLength = 24
        c.plan.dropout = false
        c.strategy = strategy
        return c
    }

    static func dataset(_ rows: [(text: String, label: String)]) throws -> LabeledDataset {
        let map = try LabelMap(names: labels)
        return LabeledDataset(task: .classification, labels: map,
                              examples: rows.enumerated().map { Example(text: $1.text, target: .classIndex(map.index(of: $1.label)!), line: $0 + 2) })
    }

    /// Three schools of different sizes on the synthetic separable task.
    static func schools(canary: String = "") throws -> [LoopbackFederation.School] {
        try [("north", 60), ("south", 90), ("west", 40)].enumerated().map { i, s in
            let rows = synthetic(count: s.1, seed: UInt64(100 + i), canary: canary)
            let validation = synthetic(count: 20, seed: UInt64(200 + i), canary: canary)
            return LoopbackFederation.School(id: s.0, training: try dataset(rows), validation: try dataset(validation))
        }
    }
}

/// A coordinator as a separate process (this test binary re-run as `CoordinatorChild`) on
/// a district CA made for it, with three schools in this process that reconnect whenever it
/// restarts; the crash and signal tests drive it.
final class ChildCoordinatorFixture {
    let work: URL
    let state: URL
    let configURL: URL
    let binary: URL
    let schools = ["east", "north", "west"]
    private var agents: [Task<Void, Error>] = []

    /// `pace(i)`: milliseconds each upload chunk of school i waits (slow links, so rounds take a while).
    init(prefix: String, federationID: String, pace: @escaping @Sendable (Int) -> Int) throws {
        binary = try ChildProcesses.testBinary()
        work = try TestFixtures.temporaryDirectory(prefix: prefix)
        let model = try TestFixtures.tinyModelFolder()
        let pki = work.appendingPathComponent("pki")
        let ca = try CertificateAuthority.initialise(at: pki, districtName: "\(federationID) district")
        try ca.issueCoordinator(hosts: ["localhost", "127.0.0.1"])
        for s in schools { try ca.issueSchool(id: s) }
        let (held, port) = try ChildProcesses.loopbackListener()
        close(held)  // free again: the coordinator child binds it
        state = work.appendingPathComponent("state")
        let yaml = """
        federation: {id: \(federationID), task: classification, labels: [a, b], base_model: \(model.path), rounds: 1000}
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
        configURL = work.appendingPathComponent("coordinator.yaml")
        try yaml.write(to: configURL, atomically: true, encoding: .utf8)
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
            let ms = pace(i)
            agent.uploadPacing = { _, _ in try? await Task.sleep(for: .milliseconds(ms)) }
            agents.append(Task { try await agent.run() })
        }
    }

    deinit { agents.forEach { $0.cancel() } }

    var audit: URL { state.appendingPathComponent("audit.jsonl") }

    /// Starts the coordinator process; with `signals`, it handles SIGTERM/SIGINT as pando-coordinator does.
    func launch(signals: Bool = false) throws -> Process {
        var environment = ["PANDO_COORDINATOR_CHILD_CONFIG": configURL.path]
        if signals { environment["PANDO_COORDINATOR_CHILD_SIGNALS"] = "1" }
        return try ChildProcesses.start(binary, test: "PandoServicesTests.CoordinatorChild/testRunCoordinatorFromEnvironment",
                                        environment: environment)
    }

    /// The audit log's events so far, in order.
    func events() -> [String] {
        ((try? String(contentsOf: audit, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["event"] as? String
        }
    }
}
