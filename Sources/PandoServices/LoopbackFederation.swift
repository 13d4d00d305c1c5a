import Foundation
import Logging
import NIOConcurrencyHelpers
import PandoCertificates
import PandoData
import PandoFederation
import PandoTraining
import PandoTransport

/// A whole federation on one machine, over the production path: a district CA made
/// in `workFolder`, a `Coordinator` listening on 127.0.0.1 with its certificate, and one
/// `SchoolAgent` per school with its own certificate, dialling in over mutual TLS.
/// `pando simulate`, `pando demo` and the end-to-end tests run this.
public final class LoopbackFederation: @unchecked Sendable {
    public struct School: Sendable {
        public var id: String
        public var training: LabeledDataset
        public var validation: LabeledDataset?
        public init(id: String, training: LabeledDataset, validation: LabeledDataset?) {
            self.id = id
            self.training = training
            self.validation = validation
        }
    }

    public let coordinator: Coordinator
    public let workFolder: URL
    public let certificates: URL
    public let schools: [School]
    let logger: Logger
    let schoolLogFolder: URL
    /// Each school's own differential-privacy budget (its school.yaml `privacy:`), by id.
    public var schoolPrivacy: [String: SchoolPrivacyBudget] = [:]
    /// Schools that vanish in their first secure-aggregation round, at the stage named
    /// (`keys`, `shares`, `masked-input`, `unmasking`), to rehearse dropouts; they reconnect after.
    public var secureDropouts: [String: String] = [:]
    /// Each school's secure-aggregation policy (school.yaml `secure_aggregation:`), by id.
    public var schoolSecureAggregation: [String: SchoolSecureAggregationPolicy] = [:]
    /// Hook for progress displays of each school's events.
    public var onSchoolEvent: (@Sendable (String, SchoolEvent) -> Void)?
    /// Tests: adjusts each school's agent before it connects.
    var prepareAgent: ((String, SchoolAgent) -> Void)?

    /// - Parameters:
    ///   - configuration: the federation; its TLS paths, listen address and port are replaced.
    ///   - schoolLogFolder: where each school's own log goes (`<id>.jsonl`).
    public init(configuration: CoordinatorConfiguration, schools: [School], workFolder: URL, schoolLogFolder: URL,
                logger: Logger) throws {
        guard !schools.isEmpty else { throw RoundError("a federation needs at least one school") }
        guard Set(schools.map(\.id)).count == schools.count else { throw RoundError("school ids must be distinct") }
        self.workFolder = workFolder
        self.schools = schools
        self.logger = logger
        self.schoolLogFolder = schoolLogFolder
        certificates = workFolder.appendingPathComponent("pki", isDirectory: true)
        let fm = FileManager.default
        if fm.fileExists(atPath: certificates.path) { try fm.removeItem(at: certificates) }
        try fm.createDirectory(at: workFolder, withIntermediateDirectories: true)
        let ca = try CertificateAuthority.initialise(at: certificates, districtName: "Pando loopback district")
        try ca.issueCoordinator(hosts: ["localhost", "127.0.0.1"])
        for s in schools { try ca.issueSchool(id: s.id) }
        var config = configuration
        let coordinatorFolder = CertificateAuthority.coordinatorDirectory(certificates)
        config.listen = "127.0.0.1"
        config.port = 0
        config.certificate = coordinatorFolder.appendingPathComponent("coordinator.pem")
        config.privateKey = coordinatorFolder.appendingPathComponent("coordinator-key.pem")
        config.caCertificate = certificates.appendingPathComponent("ca.pem")
        config.revocationList = certificates.appendingPathComponent("crl.pem")
        coordinator = Coordinator(configuration: config, logger: logger)
    }

    /// The configuration school `id` runs with once the coordinator listens on `port`.
    public func schoolConfiguration(_ id: String, port: Int) -> SchoolConfiguration {
        let c = coordinator.configuration
        var transport = SchoolTransportConfiguration.fromSchoolFolder(
            CertificateAuthority.schoolDirectory(certificates, id: id).path, coordinatorHost: "127.0.0.1", port: port)
        transport.serverName = "localhost"
        var format = DataFormat(task: c.task)
        format.policy = .fail
        var school = SchoolConfiguration(data: workFolder.appendingPathComponent("\(id)-data-in-memory"), format: format,
                                         labels: c.labels, baseModel: c.baseModel, transport: transport,
                                         cache: workFolder.appendingPathComponent("schools/\(id)/cache", isDirectory: true),
                                         log: schoolLogFolder.appendingPathComponent("\(id).jsonl"), federationID: c.federationID)
        school.privacy = schoolPrivacy[id]
        if let policy = schoolSecureAggregation[id] { school.secureAggregation = policy }
        return school
    }

    /// Runs the coordinator's rounds with every school connected; returns the reports.
    public func run() async throws -> [FederatedRoundReport] {
        let ports = AsyncStream.makeStream(of: Int.self)
        let previous = coordinator.onListening
        coordinator.onListening = { port in
            previous?(port)
            ports.continuation.yield(port)
            ports.continuation.finish()
        }
        let coordinator = self.coordinator
        // A coordinator that stops before listening (a bad state folder) ends the wait for its port.
        let coordinatorTask = Task {
            defer { ports.continuation.finish() }
            return try await coordinator.run()
        }
        var coordinatorDone = false
        defer { if !coordinatorDone { coordinatorTask.cancel() } }  // a school that cannot start ends the run
        var it = ports.stream.makeAsyncIterator()
        guard let port = await it.next() else { return try await coordinatorTask.value }
        var schoolTasks: [Task<Void, Error>] = []
        var agents: [SchoolAgent] = []
        defer { schoolTasks.forEach { $0.cancel() } }
        for s in schools {
            var schoolLogger = logger
            schoolLogger[metadataKey: "school"] = "\(s.id)"
            let agent = try SchoolAgent(configuration: schoolConfiguration(s.id, port: port), training: s.training,
                                        validation: s.validation, logger: schoolLogger)
            if let hook = onSchoolEvent {
                let id = s.id
                agent.onEvent = { hook(id, $0) }
            }
            if let stage = secureDropouts[s.id] {
                let done = NIOLockedValueBox(false)
                agent.secureDropAt = { at in
                    done.withLockedValue { d in
                        guard !d, at == stage else { return false }
                        d = true
                        return true
                    }
                }
            }
            prepareAgent?(s.id, agent)
            agents.append(agent)
            schoolTasks.append(Task { try await agent.run() })
        }
        let reports = try await withTaskCancellationHandler {
            try await coordinatorTask.value
        } onCancel: {
            coordinatorTask.cancel()
        }
        coordinatorDone = true
        // The schools stop and let go of their logs, so a later run on the same folders can open them.
        for task in schoolTasks { task.cancel() }
        for task in schoolTasks { _ = await task.result }
        for agent in agents { agent.close() }
        return reports
    }
}
