import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
import PandoTraining
import PandoTransport
import PandoWire

/// What one networked round did (identifiers and numbers only).
public struct FederatedRoundReport: Sendable, Codable {
    public var round: Int
    public var baseVersion: String
    /// The version the round produced, or the base when it was aborted.
    public var version: String
    public var committed: Bool
    public var selected: [String]
    public var accepted: [String]
    /// School → why it is not in the aggregate (rejected update, disconnected, deadline, declined).
    public var leftOut: [String: String]
    public var examples: Int
    /// Example-weighted mean of the accepted schools' local training loss.
    public var trainLoss: Double
    public var updateNorms: [String: Double]
    public var bytesUp: UInt64
    public var bytesDown: UInt64
    /// Federated evaluation of the new version: example-weighted means of the schools' validation metrics.
    public var evaluation: [String: Double]
    public var evaluationExamples: Int
    public var evaluatedSchools: [String]
    /// School → why its evaluation result was left out (also in the audit log).
    public var evaluationRefused: [String: String] = [:]
    /// Test metrics an observer computed (`pando simulate` scores its held-out split).
    public var test: [String: Double] = [:]
    /// Compute time of validating and folding the updates and of committing the version
    /// (measured on the compute lane, without waiting for it).
    public var aggregateSeconds: Double
    /// Compute time of `observeCommit` (a simulation scoring its test split).
    public var testSeconds: Double = 0
    public var seconds: Double
    /// School → what it reported this round (counts, metrics, norm), for the stored history.
    public var schoolFigures: [String: SchoolRound] = [:]
}

/// The coordinator service: listens for schools over mutual TLS and runs federated
/// rounds over whoever is connected.
///
/// Each round: select schools (seeded sample of the connected ones) → send each an
/// assignment naming the head version by SHA-256, with the strategy's plan and a fresh
/// nonce → schools fetch the version if they lack it, train, upload their delta and
/// send a result → each update is checked (round, nonce, base, shapes, finiteness, norm
/// bound) and folded at once into the strategy's streaming aggregator → with the quorum
/// by the deadline the new version is committed (weights, version record and audit
/// record together), else the round is aborted and the head stays → the schools score
/// the new version on their validation data (federated evaluation). A school that
/// disconnects, misses the deadline or sends an invalid update is left out of the round
/// with a recorded reason and is asked again in later rounds.
public final class Coordinator: @unchecked Sendable {
    public let configuration: CoordinatorConfiguration
    public var transport: CoordinatorTransportConfiguration
    let logger: Logger
    /// Called once the listener is bound, with its port.
    public var onListening: (@Sendable (Int) -> Void)?
    /// Called after each round with its report.
    public var onRound: (@Sendable (FederatedRoundReport) -> Void)?
    /// Called on the compute lane after each commit with the new global model; returns
    /// test metrics to put in the report (a simulation's held-out split). Never sees school data.
    public var observeCommit: (@Sendable (BertModel) throws -> [String: Double])?
    /// Time a disconnected school has to come back before it is left out of the round.
    public var reconnectGrace: Duration = .seconds(30)
    /// Progress lines (round started, school trained, committed) for a person watching.
    public var onProgress: (@Sendable (String) -> Void)?
    /// Create the audit signing key if the state folder lacks it (`--new-signing-key`); without
    /// it a state folder with a signed log and no key is refused.
    public var newSigningKey = false
    /// The round in progress, the live sessions and an event per stage and round, for the
    /// status listener and metrics (PandoStatus).
    public let monitor = CoordinatorMonitor()
    /// Test hook: changes an assignment to a school (by id) just before it is sent (a coordinator that lies).
    var alterAssignment: (@Sendable (String, inout RoundAssignment) -> Void)?

    private let stopRequested = NIOLockedValueBox(false)
    private let liveHub = NIOLockedValueBox<SessionHub?>(nil)
    /// Pause after a round that failed with an error (ledger, disk) before the next attempt.
    public var retryAfterFailure: Duration = .seconds(10)

    public init(configuration: CoordinatorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        transport = CoordinatorTransportConfiguration(
            host: configuration.listen, port: configuration.port,
            certificatePath: configuration.certificate.path, privateKeyPath: configuration.privateKey.path,
            caCertificatePath: configuration.caCertificate.path, revocationListPath: configuration.revocationList.path)
        transport.revocationNumberPath = configuration.stateFolder.appendingPathComponent(Self.crlNumberFile).path
    }

    /// In the state folder: the highest CRL number accepted, so a restart still refuses an older `crl.pem`.
    public static let crlNumberFile = "crl-number.json"

    /// Asks `run` to finish after the current round.
    public func stop() { stopRequested.withLockedValue { $0 = true } }

    /// Asks `run` to end now: the open round (or the wait for schools) stops, is recorded as
    /// aborted with `reason`, schools are told goodbye, and `run` returns. For SIGTERM/SIGINT.
    public func shutdown(reason: String) {
        stop()
        liveHub.withLockedValue { $0 }?.post(.stopRequested(reason))
    }

    /// Opens the state folder (continuing its federation if it has one), starts the
    /// listener, runs `configuration.rounds.rounds` rounds, and returns their reports.
    public func run() async throws -> [FederatedRoundReport] {
        let cfg = configuration
        let head = ClassifierHead(objective: cfg.task.objective, labels: cfg.labels, pooling: cfg.plan.pooling)
        let global = try await ComputeLane.run { try BertModel.load(from: cfg.baseModel, head: head, seed: cfg.rounds.seed).0 }
        guard !global.inferenceOnly else {
            throw RoundError("\(cfg.baseModel.path) is an int8 checkpoint (pando quantize), for inference only: a federation starts from the float32 model")
        }
        guard cfg.plan.freezeLayers <= global.config.layers else {
            throw RoundError("local.freeze_layers \(cfg.plan.freezeLayers) exceeds the model's \(global.config.layers) encoder layers")
        }
        let ledger = try FederationLedger(folder: cfg.stateFolder, federationID: cfg.federationID, tokenizerFolder: cfg.baseModel,
                                          newSigningKey: newSigningKey)
        defer { ledger.close() }
        ledger.versionRecord = .federatedVersion(federation: cfg.federationID, task: cfg.task, labels: cfg.labels, pooling: head.pooling,
                                                 maxLength: cfg.plan.maxLength, baseModel: cfg.baseModel.path)
        if ledger.ledger.signingKeyReplaced {
            logger.warning("created a new audit signing key for a state folder with a signed log, recorded as signingKeyReplaced: records from there on verify only with \(ledger.publicKeyURL.path); give it to the officers, who verify with both keys (pando audit verify --key OLD --key NEW)")
        }
        let recovery = ledger.ledger.recovery
        for n in recovery.abortedRounds { logger.notice("round \(n) was in flight when the coordinator stopped: recorded as aborted") }
        let strategy = cfg.strategy.make(layout: global.layout)
        let opened = try ledger.open(global: global, task: cfg.task.rawValue, strategy: strategy)
        if let federation = try ledger.ledger.federation(), federation.id != cfg.federationID {
            throw RoundError("\(cfg.stateFolder.path) holds federation '\(federation.id)', not '\(cfg.federationID)': use another state folder")
        }
        logger.info("federation \(cfg.federationID): head version \(opened.version.prefix(12)), next round \(opened.nextRound)\(opened.resumed ? " (continued)" : " (new)")")
        if !strategy.state.isEmpty {
            logger.info("\(strategy.name) server state: \(opened.restoredStrategyState ? "restored from the head version" : "fresh (the head version holds none for these settings)")")
        }
        let incoming = cfg.stateFolder.appendingPathComponent("incoming", isDirectory: true)
        try PrivateFiles.folder(incoming)
        try recoverIncoming(incoming, ledger: ledger)
        let refusals = RefusalRecorder(ledger: ledger.ledger, logger: logger)
        let serverBox = NIOLockedValueBox<CoordinatorServer?>(nil)
        let hub = SessionHub(incoming: incoming, logger: logger) { school in
            guard let server = serverBox.withLockedValue({ $0 }), let token = WireToken(school) else { return "unknown school \(school)" }
            return server.credentialProblem(of: token)
        }
        hub.onSessionChange = { [monitor = self.monitor] in monitor.sessionChanged($0) }
        let server = try CoordinatorServer(configuration: transport, logger: logger) { refusal in
            refusals.record(refusal)
            if let school = refusal.school { hub.post(.credentialsRevoked(school, reason: refusal.refusal.reason)) }
        }
        serverBox.withLockedValue { $0 = server }
        liveHub.withLockedValue { $0 = hub }
        defer { liveHub.withLockedValue { $0 = nil } }
        let listening = AsyncStream.makeStream(of: Int.self)
        let serverTask = Task {
            // However the listener ends (a port in use ends it at once), the wait below ends too.
            defer { listening.continuation.finish() }
            try await server.run(onListening: { port in listening.continuation.yield(port); listening.continuation.finish() }) { conn, _ in
                try await hub.serve(conn)
            }
        }
        defer { serverTask.cancel() }
        var portIterator = listening.stream.makeAsyncIterator()
        guard let port = await portIterator.next() else {
            _ = try await serverTask.value  // surfaces the bind error
            throw RoundError("the coordinator stopped before listening")
        }
        monitor.attach(ledger: ledger.ledger, port: port, sessions: Self.liveSchools(hub: hub, server: server))
        defer { monitor.detach() }
        onListening?(port)

        let driver = RoundDriver(coordinator: self, hub: hub, ledger: ledger, global: global, strategy: strategy,
                                 labels: LabelSetID(task: cfg.task, labels: cfg.labels))
        var reports: [FederatedRoundReport] = []
        var events = hub.events.makeAsyncIterator()
        var done = 0
        rounds: while done < cfg.rounds.rounds {
            if stopRequested.withLockedValue({ $0 }) { break }
            do {
                let report = try await driver.runRound(events: &events)
                reports.append(report)
                done += 1
                onRound?(report)
            } catch let stop as StopRequested {
                logger.notice("\(stop)")
                break
            } catch is CancellationError {
                throw CancellationError()
            } catch let failure as IntegrityFailure {
                await hub.sayGoodbye()
                throw failure.underlying
            } catch {
                // One round's failure (the ledger, the disk) ends that round, not the service.
                if driver.roundStarted { done += 1 }
                logger.error("the round failed: \(error); retrying in \(retryAfterFailure)")
                onProgress?("round failed: \(error)")
                let deadline = ContinuousClock.now + retryAfterFailure
                while ContinuousClock.now < deadline {
                    if stopRequested.withLockedValue({ $0 }) { break rounds }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        await hub.sayGoodbye()
        serverTask.cancel()
        hub.finish()
        return reports
    }
}

/// Audits the connections the listener refuses during TLS, at most `perMinute` records a
/// minute so a flood of bad handshakes cannot flood the log (or its fsyncs); the next
/// record says how many were left out.
final class RefusalRecorder: @unchecked Sendable {
    let ledger: CoordinatorLedger
    let logger: Logger
    let perMinute: Int
    private let lock = NIOLock()
    private let queue = DispatchQueue(label: "pando.audit.refusals")
    private var windowStart = Date.distantPast
    private var inWindow = 0
    private var suppressed = 0

    init(ledger: CoordinatorLedger, logger: Logger, perMinute: Int = 30) {
        self.ledger = ledger
        self.logger = logger
        self.perMinute = perMinute
    }

    func record(_ refusal: ConnectionRefusal) {
        let now = Date()
        // A live session closed for its certificate is always recorded (bounded by the number of
        // sessions); only anonymous handshake failures share the budget.
        let left: Int? = refusal.school != nil ? 0 : lock.withLock {
            if now.timeIntervalSince(windowStart) >= 60 {
                windowStart = now
                inWindow = 0
            }
            guard inWindow < perMinute else {
                suppressed += 1
                return nil
            }
            inWindow += 1
            defer { suppressed = 0 }
            return suppressed
        }
        guard let left else { return }
        var reason = refusal.school == nil
            ? "\(refusal.refusal.kind.rawValue) from \(refusal.address): \(refusal.refusal.reason)"
            : "\(refusal.refusal.kind.rawValue): session closed: \(refusal.refusal.reason)"
        if left > 0 { reason = "(\(left) earlier refusals not recorded) " + reason }
        let school = refusal.school
        // Called on an event loop: the ledger's fsync happens on our own queue.
        queue.async { [ledger, logger, reason, school] in
            do {
                try ledger.record(AuditEntry(event: .connectionRefused, school: school, reason: reason))
            } catch {
                logger.error("could not audit a refused connection: \(error)")
            }
        }
    }
}

extension Coordinator {
    /// Updates stored by a coordinator that stopped before using them: their round was
    /// recorded as aborted when the ledger reopened; each is recorded as rejected with its
    /// hash (the school may have logged it as sent) and removed, with any partial upload.
    func recoverIncoming(_ incoming: URL, ledger: FederationLedger) throws {
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: incoming.path).sorted() {
            let file = incoming.appendingPathComponent(name)
            defer { try? fm.removeItem(at: file) }
            guard name.hasPrefix("r"), name.hasSuffix(".delta"), let dash = name.firstIndex(of: "-"),
                  let round = Int(name[name.index(after: name.startIndex)..<dash]) else { continue }
            let school = String(name[name.index(after: dash)...].dropLast(".delta".count))
            // Only rounds that ended without using it (aborted at restart); a committed round
            // already recorded every update it took, and one it left out was recorded then.
            guard let status = try? ledger.ledger.round(round).status, status == .aborted else { continue }
            let size = (try fm.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
            try ledger.ledger.record(AuditEntry(
                event: .updateRejected, round: round, school: school, updateSHA256: try Digest.sha256(fileAt: file), wireBytes: size,
                reason: "stored, but the coordinator stopped before using it (round \(round) aborted at restart)"))
            logger.notice("round \(round): discarded the update \(school) uploaded before the coordinator stopped")
        }
    }
}

/// The coordinator's round logic over the hub: one round at a time.
final class RoundDriver: @unchecked Sendable {
    let coordinator: Coordinator
    let hub: SessionHub
    let ledger: FederationLedger
    let global: BertModel
    let strategy: any Strategy
    let labels: LabelSetID
    let delta: ParameterBuffer
    var version: String
    var rng: SplitMix64
    private var timerCounter = 0
    /// Longest wait to hand a school its assignment before its connection is closed.
    static let assignmentTimeout: Duration = .seconds(120)
    /// The median example count of the last committed round's schools: weights are capped
    /// at `strategy.weight_cap_multiple` times it.
    var referenceMedian: Int?
    /// SHA-256 of every update received so far (any school, any round) → who sent it when:
    /// the same bytes again are a replay.
    var seenUpdates: [String: (school: String, round: Int)] = [:]
    var config: CoordinatorConfiguration { coordinator.configuration }
    var logger: Logger { coordinator.logger }

    init(coordinator: Coordinator, hub: SessionHub, ledger: FederationLedger, global: BertModel, strategy: any Strategy, labels: LabelSetID) {
        self.coordinator = coordinator
        self.hub = hub
        self.ledger = ledger
        self.global = global
        self.strategy = strategy
        self.labels = labels
        delta = ParameterBuffer(layout: global.layout)
        version = (try? ledger.ledger.head()?.id) ?? ""
        rng = SplitMix64(seed: coordinator.configuration.rounds.seed ^ 0xC0_0D1A)
        // A restarted coordinator takes the reference from the signed log.
        let audit = coordinator.configuration.stateFolder.appendingPathComponent("audit.jsonl")
        if let records = try? AuditRecord.readAll(audit).records,
           let last = records.last(where: { $0.event == .roundCommitted }), let counts = last.examplesBySchool {
            referenceMedian = UpdateBounds.median(Array(counts.values))
        }
        for r in (try? AuditRecord.readAll(audit).records) ?? [] where r.event == .updateReceived || r.event == .updateRejected {
            if let hash = r.updateSHA256, let school = r.school, let round = r.round { seenUpdates[hash] = (school, round) }
        }
    }

    func progress(_ line: String) {
        logger.info("\(line)")
        coordinator.onProgress?(line)
    }

    /// Whether the latest `runRound` got as far as recording its round.
    var roundStarted = false

    /// A timer event `after` from now; returns its token.
    func timer(after: Duration) -> (Int, Task<Void, Never>) {
        timerCounter += 1
        let token = timerCounter
        let hub = self.hub
        let task = Task {
            try? await Task.sleep(for: after)
            if !Task.isCancelled { hub.post(.timer(token)) }
        }
        return (token, task)
    }

    func waitForSchools(events: inout AsyncStream<HubEvent>.Iterator) async throws -> [String] {
        let needed = config.rounds.minSchools
        var connected = hub.connectedSchools
        if connected.count >= needed { return connected }
        progress("waiting for schools: \(connected.count) of \(needed) connected")
        // A service waits for as long as it takes, saying every `waitForSchools` how far it is.
        var (token, task) = timer(after: config.rounds.waitForSchools)
        defer { task.cancel() }
        while connected.count < needed {
            guard let event = await events.next() else { throw CancellationError() }
            switch event {
            case .timer(let t) where t == token:
                logger.warning("still waiting: \(hub.connectedSchools.count) of the \(needed) schools a round needs (selection.min_schools) are connected")
                progress("still waiting for schools: \(hub.connectedSchools.count) of \(needed) connected")
                (token, task) = timer(after: config.rounds.waitForSchools)
            case .connected, .disconnected:
                connected = hub.connectedSchools
            case .stopRequested(let reason):
                throw StopRequested(reason: reason)
            default: continue
            }
        }
        return connected
    }

    func select(from connected: [String]) -> [String] {
        let n = connected.count
        let k = min(n, max(config.rounds.minSchools, Int((Double(n) * config.rounds.fraction).rounded(.up))))
        if k == n { return connected }
        var order = connected
        seededShuffle(&order, using: &rng)
        return Array(order.prefix(k)).sorted()
    }

    static func nonce() -> WireToken {
        var g = SystemRandomNumberGenerator()
        let hex = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
        return WireToken(hex)!
    }

    /// The object schools fetch for `version`, once its file is re-hashed: a version that no
    /// longer matches its id (changed on disk since it was committed) is never served.
    func modelRef(_ version: String) async throws -> (ObjectRef, URL) {
        let store = ledger.ledger.store
        try await ComputeLane.run { try store.checkIntact(version) }
        let file = store.weights(of: version)
        let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
        guard let digest = ObjectDigest(hex: version) else { throw RoundError("version id \(version) is not a SHA-256") }
        return (ObjectRef(id: WireToken("model-\(version.prefix(16))")!, size: UInt64(size), sha256: digest), file)
    }

    /// Why a training result is left out, in the audit's words.
    struct ResultRefusal: Error { let reason: String }

    /// The stored upload a training result names, after the checks every round makes: the
    /// school completed, its result names the bytes stored for it, those bytes are no replay
    /// (their hash is then remembered), its example count is plausible (`minimumExamples`
    /// and `strategy.max_examples_per_school`), and its metrics are possible.
    func storedUpload(of result: RoundResult, from school: String, round: Int,
                      minimumExamples: UInt64 = 0) -> Result<(file: URL, digest: ObjectDigest, size: UInt64), ResultRefusal> {
        guard result.status == .completed else {
            return .failure(ResultRefusal(reason: "the school reported \(result.status.rawValue)" + (result.declineReason.map { ": \($0)" } ?? "")))
        }
        guard let up = hub.current?.expected[school]?.upload, let ref = result.update, ref.sha256 == up.digest, ref.size == up.size else {
            return .failure(ResultRefusal(reason: "its result names no stored update"))
        }
        if let earlier = seenUpdates[up.digest.hex] {
            return .failure(ResultRefusal(reason: "replay: the same bytes as the update \(earlier.school) sent in round \(earlier.round)"))
        }
        seenUpdates[up.digest.hex] = (school, round)
        let limit = UInt64(config.strategy.maxExamplesPerSchool)
        guard result.exampleCount >= minimumExamples, result.exampleCount <= limit else {
            return .failure(ResultRefusal(reason: "it reported \(result.exampleCount) examples, outside \(minimumExamples)…\(limit) (strategy.max_examples_per_school)"))
        }
        if let problem = ResultMetrics.problem(in: result.metrics) {
            return .failure(ResultRefusal(reason: "its result reports an impossible metric: \(problem)"))
        }
        return .success(up)
    }

    /// `version` as a patch from its parent (``VersionPatch``), made once and kept in
    /// `state/patches/`: offered with assignments when it is smaller than 90% of the whole
    /// file. Nil for the base model, a parent no longer on disk, or a patch that saves little.
    func patchRef(_ version: String) async -> (ref: VersionPatchRef, file: URL)? {
        let store = ledger.ledger.store
        guard let record = try? ledger.ledger.versions().first(where: { $0.id == version }), let parent = record.parent,
              store.hasWeights(parent), let base = ObjectDigest(hex: parent) else { return nil }
        let folder = config.stateFolder.appendingPathComponent("patches", isDirectory: true)
        let file = folder.appendingPathComponent("\(parent.prefix(16))-\(version.prefix(16)).patch")
        do {
            let made = try await ComputeLane.run { () -> (Int, String)? in
                try PrivateFiles.folder(folder)
                if !FileManager.default.fileExists(atPath: file.path) {
                    guard try VersionPatch.make(from: store.weights(of: parent), to: store.weights(of: version), patch: file) != nil else { return nil }
                }
                // Only the newest patches are kept: the ones this round and the last one serve.
                let fm = FileManager.default
                let others = try fm.contentsOfDirectory(at: folder, includingPropertiesForKeys: [.contentModificationDateKey])
                    .filter { $0.pathExtension == "patch" && $0.lastPathComponent != file.lastPathComponent }
                    .sorted { ((try? $0.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate) ?? .distantPast)
                        > ((try? $1.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate) ?? .distantPast) }
                for old in others.dropFirst(2) { try? fm.removeItem(at: old) }
                let size = (try fm.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
                return (size, try Digest.sha256(fileAt: file))
            }
            guard let (size, sha) = made, let digest = ObjectDigest(hex: sha) else { return nil }
            let full = (try? FileManager.default.attributesOfItem(atPath: store.weights(of: version).path)[.size] as? Int) ?? 0
            guard Double(size) < 0.9 * Double(full) else { return nil }
            return (VersionPatchRef(base: base, object: ObjectRef(id: WireToken("patch-\(version.prefix(16))")!, size: UInt64(size), sha256: digest)), file)
        } catch {
            logger.warning("no patch for version \(version.prefix(12)): \(error); schools fetch the whole file")
            return nil
        }
    }

    /// The audit log's last record (seq and hash) as it stands now, for an assignment: each school
    /// logs it, anchoring the log outside the coordinator. Nil only if the ledger cannot be read.
    func auditAnchor() -> AuditAnchor? {
        guard let head = try? ledger.ledger.auditHead(), let hash = head.lastHash.flatMap(ObjectDigest.init(hex:)) else {
            logger.error("the audit head could not be read: the assignment goes without it")
            return nil
        }
        return AuditAnchor(sequence: UInt64(head.count), hash: hash)
    }

    /// Where `version` comes from, from the ledger's version records: the version, its parent,
    /// and so on to the base model (at most `VersionLineage.maxLinks` links); the base model's
    /// tensors the pretrained folder lacks were drawn with `rounds.seed`.
    func lineage(of version: String) -> VersionLineage? {
        guard let records = try? ledger.ledger.versions() else { return nil }
        let byID = Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var chain: [VersionLink] = []
        var next: String? = version
        while let id = next, let record = byID[id], chain.count < VersionLineage.maxLinks, let digest = ObjectDigest(hex: id) {
            chain.append(VersionLink(version: digest, parent: record.parent.flatMap(ObjectDigest.init(hex:)), round: record.round.map(UInt64.init)))
            next = record.parent
        }
        guard !chain.isEmpty else { return nil }
        return VersionLineage(chain: chain, initSeed: config.rounds.seed)
    }

    /// Sends `message` on `session` between transfers. The gate may be held by a transfer (the
    /// stall watchdog bounds one that stops moving); only the send itself is bounded here: a
    /// peer that takes no bytes for `assignmentTimeout` is closed.
    /// Sends a control message at once, between the frames of any transfer under way (the
    /// school keeps it until its own transfer step is done), without waiting for the session's
    /// gate: a school that keeps a download going cannot hold back a stage of a secure round.
    /// A peer that takes no bytes for `timeout` is closed.
    static func sendNow(_ message: WireMessage, on session: SchoolSession, timeout: Duration = .seconds(30)) async throws {
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            session.connection.close()
        }
        defer { watchdog.cancel() }
        try await session.connection.send(message)
    }

    static func send(_ message: WireMessage, on session: SchoolSession) async throws {
        try await session.gate.withLock {
            let watchdog = Task {
                try await Task.sleep(for: RoundDriver.assignmentTimeout)
                session.connection.close()
            }
            defer { watchdog.cancel() }
            try await session.connection.send(message)
        }
    }

    /// Sends assignments to `schools`; returns those it could not reach.
    func assign(_ schools: [String], round: Int, task: RoundTask, model: ObjectRef, plan: LocalTrainingPlan,
                nonces: [String: WireToken], secure: SecureAggregationSetup? = nil) async -> [String: String] {
        let patch = hub.current.flatMap { $0.model == model ? $0.patch?.ref : nil }
        let parameters = RoundParameters.encode(plan, labels: labels)
        let lineage = self.lineage(of: model.sha256.hex)
        let alter = coordinator.alterAssignment
        return await withTaskGroup(of: (String, String?).self) { group in
            for school in schools {
                let hub = self.hub
                group.addTask {
                    guard let session = hub.session(school) else { return (school, "disconnected before the assignment") }
                    var assignment = RoundAssignment(round: UInt64(round), task: task, model: model, nonce: nonces[school]!, parameters: parameters,
                                                     auditHead: self.auditAnchor(), lineage: lineage, secureAggregation: secure,
                                                     patch: patch)
                    alter?(school, &assignment)
                    let a = assignment
                    // Credits first: a school answers a secure assignment with its keys at once,
                    // possibly before this task resumes after the send.
                    hub.noteAssignment(school, secure: secure != nil)
                    do {
                        try await RoundDriver.send(.roundAssignment(a), on: session)
                        return (school, nil)
                    } catch {
                        return (school, "the assignment could not be sent (connection lost)")
                    }
                }
            }
            var failed: [String: String] = [:]
            for await (school, why) in group { if let why { failed[school] = why } }
            return failed
        }
    }

    func runRound(events: inout AsyncStream<HubEvent>.Iterator) async throws -> FederatedRoundReport {
        roundStarted = false
        let start = ContinuousClock.now
        coordinator.monitor.enter(.waiting)
        let connected = try await waitForSchools(events: &events)
        coordinator.monitor.enter(.selecting)
        // A school whose certificate was revoked or expired since it connected is not asked.
        var eligible: [String] = []
        for school in connected {
            if let problem = hub.credentials(school) {
                try ledger.ledger.record(AuditEntry(event: .connectionRefused, school: school,
                                                    reason: "not selected: \(problem)"))
                progress("\(school) not selected: \(problem)")
            } else {
                eligible.append(school)
            }
        }
        let selected = select(from: eligible)
        let upcoming = (try ledger.ledger.rounds().map(\.number).max() ?? 0) + 1
        let scheduled = config.rounds.learningRateDecay.plan(round: upcoming, of: config.rounds.rounds, configured: config.plan)
        var plan = strategy.plan(round: upcoming, configured: scheduled)
        if plan.classBalance == .weightedGlobal {
            let census = try censusOutcome()
            if let prior = census.prior {
                plan.classPrior = prior
            } else if let round = census.spentIn {
                // Asking again would be refused (class-census-spent), and rightly: say so and go on.
                plan.classBalance = .weighted
                progress("the class census of round \(round) gave no prior, and schools add their label fractions to one sum only: this round weights each school's loss by its own counts (weighted)")
            }
        }
        let started = try ledger.startRound(strategy: strategy, plan: plan, maxUpdateNorm: config.strategy.maxUpdateNorm,
                                            quorum: config.rounds.quorum, fractionPerRound: config.rounds.fraction,
                                            frozen: TensorSelection(layout: global.layout, plan: plan).frozen,
                                            secureAggregation: config.secureAggregation != nil)
        let round = started.number, base = started.base
        roundStarted = true
        version = base
        coordinator.monitor.enter(.selecting, round: round, selected: selected)
        do {
            return try await runRound(round, base: base, selected: selected, plan: plan, start: start, events: &events)
        } catch {
            if (try? ledger.ledger.roundInFlight())?.number == round {
                let reason = (error as? StopRequested)?.description ?? "the round stopped with an error (\(error))"
                try? ledger.abort(round: round, reason: reason)
                recordAborted(round: round, base: base, selected: selected, reason: reason, start: start)
                progress("round \(round): ABORTED (\(reason))")
                // The aggregate may already have moved the in-memory model (and FedAdam's moments)
                // before the commit failed: back to the base, or the next round would build on an
                // aborted one. If even that fails, stop rather than go on from unknown weights.
                do { try await restoreGlobal(from: base) } catch {
                    hub.closeRound()
                    throw IntegrityFailure(underlying: RoundError("could not restore the base version \(base.prefix(12)) after round \(round) failed: \(error)"))
                }
            }
            hub.closeRound()
            throw error
        }
    }

    /// What the audit log says of `weighted-global`'s one census: the prior of the newest secure
    /// round that unmasked one (committed or not: the coordinator has seen it), or the round of a
    /// census that gave none. Schools add their fractions to one sum only, so neither a restart,
    /// a rollback nor a failed round asks them again.
    func censusOutcome() throws -> (prior: [Double]?, spentIn: Int?) {
        let records = try AuditRecord.readAll(ledger.ledger.auditURL).records.filter { $0.event == .secureAggregation }
        var spentIn: Int?
        for r in records.reversed() {
            guard let fields = r.secureAggregation, fields["census"] != nil else { continue }
            let values = fields["classPrior"]?.arrayValue?.compactMap(\.doubleValue) ?? []
            if values.count == config.labels.count, values.allSatisfy({ $0 >= 0 && $0.isFinite }) {
                let total = values.reduce(0, +)
                if total > 0 { return (values.map { $0 / total }, nil) }
            }
            spentIn = spentIn ?? r.round
        }
        return (nil, spentIn)
    }

    /// Puts the base version's weights (and the strategy's state stored with it) back into memory.
    func restoreGlobal(from base: String) async throws {
        let folder = ledger.ledger.store.folder(of: base)
        let global = Unchecked(global), head = global.value.head
        try await ComputeLane.run {
            let (model, _) = try BertModel.load(from: folder, head: head)
            global.value.parameters.buffer.copy(from: model.parameters.buffer)
        }
        _ = try ledger.restoreState(of: strategy, from: base)
    }

    private func runRound(_ round: Int, base: String, selected: [String], plan: LocalTrainingPlan, start: ContinuousClock.Instant,
                          events: inout AsyncStream<HubEvent>.Iterator) async throws -> FederatedRoundReport {
        let cfg = config
        // Federated LoRA: the round's adapters on the global model (the same A as every school's);
        // updates are in its layout, and their mean is merged into the weights at the commit.
        let roundModel = try FederatedLoRA.roundModel(global: global, plan: plan, round: round)
        let layout = roundModel?.layout ?? global.layout
        let scratch = roundModel == nil ? delta : ParameterBuffer(layout: layout)
        let aggregation = AggregationRound(round: round, baseVersion: base, layout: layout, strategy: strategy,
                                           maxNorm: cfg.strategy.maxUpdateNorm ?? .infinity)
        let baseNorm = DeltaMath.norm(global.parameters.buffer)
        // What the plan trains, hence what each update carries (the embedding tables stay frozen by default).
        let selection = TensorSelection(layout: layout, plan: plan)
        // …and how it is compressed: the one size the coordinator accepts, and how it is decoded.
        let pipeline = UpdatePipeline(selection: selection, compression: plan.compression)
        let model: ObjectRef, modelFile: URL
        do { (model, modelFile) = try await modelRef(base) } catch {
            try ledger.abort(round: round, reason: "the base version is not served: \(error)")
            // Every later round would start from the same corrupt head: stop (fail closed) so an
            // operator restores it, rather than aborting rounds forever.
            throw IntegrityFailure(underlying: error)
        }
        var nonces: [String: WireToken] = [:]
        var expected: [String: Expectation] = [:]
        for s in selected {
            nonces[s] = Self.nonce()
            expected[s] = Expectation(nonce: nonces[s]!, uploadID: WireToken("update-r\(round)")!)
            try ledger.selected(s, round: round, base: base, certificateSerial: hub.session(s)?.connection.certificateSerial)
        }
        // Under secure aggregation every school uploads the same fixed-size masked file.
        let secure = cfg.secureAggregation
        let census = plan.censusLength(classCount: global.head.labels.count)
        let updateSize = secure == nil ? UInt64(pipeline.encodedBytes) : UInt64(MaskedUpdateFile.size(words: selection.trainedCount + census + 1))
        hub.openRound(OpenRound(number: round, task: .train, model: model, modelFile: modelFile, expected: expected,
                                updateSize: updateSize, patch: await patchRef(base)))
        progress("round \(round): \(selected.count) school(s) selected (\(selected.joined(separator: ", "))), base \(base.prefix(12))")
        coordinator.monitor.enter(.training)

        var leftOut: [String: String] = [:]
        var pending = Set(selected)
        var weightedLoss = 0.0
        var aggregateSeconds = 0.0
        var schoolFigures: [String: SchoolRound] = [:]
        // Records a school as left out; an update it stored but never confirmed is recorded with its hash.
        func leaveOut(_ school: String, _ reason: String) throws {
            guard pending.remove(school) != nil else { return }
            leftOut[school] = reason
            coordinator.monitor.leftOut(school, reason: reason)
            var entry = AuditEntry(event: .updateRejected, round: round, school: school, baseVersion: base, reason: reason)
            if let up = hub.forget(school) {
                entry.updateSHA256 = up.digest.hex
                entry.wireBytes = Int(up.size)
                try? FileManager.default.removeItem(at: up.file)
            }
            try ledger.ledger.record(entry)
            progress("round \(round): \(school) left out: \(reason)")
        }
        let (deadline, deadlineTask) = timer(after: cfg.rounds.roundDeadline)
        defer { deadlineTask.cancel() }
        if let secure {
            let tally = try await runSecureRound(round, base: base, selected: selected, plan: plan, selection: selection, settings: secure,
                                                 model: model, nonces: nonces, aggregation: aggregation, meanBuffer: scratch, deadline: deadline,
                                                 events: &events, leaveOut: leaveOut)
            return try await finishRound(round, base: base, selected: selected, plan: plan, start: start, aggregation: aggregation,
                                         roundModel: roundModel, leftOut: leftOut, weightedLoss: tally.weightedLoss,
                                         aggregateSeconds: tally.aggregateSeconds, schoolFigures: tally.schoolFigures, events: &events)
        }
        let unreachable = await assign(selected, round: round, task: .train, model: model, plan: plan, nonces: nonces)
        for (school, why) in unreachable.sorted(by: { $0.key < $1.key }) { try leaveOut(school, why) }
        progress("round \(round): assignment sent to \(selected.count - unreachable.count) school(s); deadline \(cfg.rounds.roundDeadline)")
        var graceTimers: [Int: String] = [:]
        var graceTasks: [Task<Void, Never>] = []
        var ignoredResults: Set<String> = []
        defer { graceTasks.forEach { $0.cancel() } }

        while !pending.isEmpty {
            guard let event = await events.next() else { throw CancellationError() }
            switch event {
            case .timer(let t) where t == deadline:
                for school in pending.sorted() { try leaveOut(school, "missed the round deadline (\(cfg.rounds.roundDeadline))") }
            case .timer(let t):
                if let school = graceTimers.removeValue(forKey: t), pending.contains(school), hub.session(school) == nil {
                    try leaveOut(school, "disconnected during the round")
                }
            case .connected(let school):
                // Back within its grace period: a later drop gets a full period of its own.
                graceTimers = graceTimers.filter { $0.value != school }
                guard pending.contains(school) && hub.current?.expected[school]?.upload == nil else { continue }
                // It reconnected mid-round (a dropped link): it may never have read its
                // assignment, so send it again, same nonce. A school that already has the
                // update re-offers it first and finishes the round either way.
                let plan = plan, nonces = nonces
                Task { _ = await self.assign([school], round: round, task: .train, model: model, plan: plan, nonces: nonces) }
            case .disconnected(let school) where pending.contains(school):
                let (token, task) = timer(after: coordinator.reconnectGrace)
                graceTimers[token] = school
                graceTasks.append(task)
            case .credentialsRevoked(let school, let reason) where pending.contains(school):
                try leaveOut(school, "its certificate is no longer valid: \(reason)")
            case .stopRequested(let reason):
                throw StopRequested(reason: reason)
            case .result(let school, let result):
                guard pending.contains(school), result.round == UInt64(round), result.task == .train,
                      result.nonce == nonces[school] else {
                    // Nothing is taken from it; the record says what arrived (a late or replayed
                    // result, or one from a school this round did not select).
                    let why: String
                    if nonces[school] == nil {
                        why = "a result for round \(result.round) from a school round \(round) did not select; ignored"
                    } else if result.round != UInt64(round) || result.nonce != nonces[school] {
                        why = "a result for round \(result.round) that does not match round \(round)'s assignment (late or replayed); ignored"
                    } else {
                        why = "a second result for round \(round); ignored"
                    }
                    // One record per school and round: a flood of results costs the log one line.
                    if ignoredResults.insert(school).inserted {
                        logger.notice("\(school): \(why)")
                        try ledger.ledger.record(AuditEntry(event: .updateRejected, round: round, school: school, reason: why))
                    }
                    continue
                }
                let up: (file: URL, digest: ObjectDigest, size: UInt64)
                switch storedUpload(of: result, from: school, round: round) {
                case .failure(let why):
                    try leaveOut(school, why.reason)
                    continue
                case .success(let stored): up = stored
                }
                pending.remove(school)
                let t0 = ContinuousClock.now
                let examples = Int(clamping: result.exampleCount)
                let metrics = Dictionary(uniqueKeysWithValues: result.metrics.map { ($0.key.value, $0.value) })
                schoolFigures[school] = SchoolRound(school: school, selected: true, accepted: false, trainingExamples: examples,
                                                    trainingMetrics: metrics)
                var update = ModelUpdate(school: school, round: round, baseVersion: base, delta: scratch,
                                         exampleCount: examples, metrics: metrics)
                let (weight, capped) = UpdateBounds.weight(reported: examples, referenceMedian: referenceMedian ?? cfg.strategy.initialMedianExamples,
                                                           multiple: cfg.strategy.weightCapMultiple)
                if capped {
                    update.cappedWeight = weight
                    progress("round \(round): \(school) reported \(examples) examples; its weight is capped at \(weight) "
                             + "(\(cfg.strategy.weightCapMultiple) × the last round's median, \(referenceMedian ?? cfg.strategy.initialMedianExamples))")
                }
                // Honest AdamW training with this plan on this many examples cannot move the weights further.
                update.sentParameters = selection.trainedCount
                update.encodedBytes = Int(up.size)
                // …from the capped count: a school that overstates its examples gets neither the weight nor the room.
                let normBound = UpdateBounds.maxDeltaNorm(plan: plan, examples: weight, trainedParameters: selection.trainedCount,
                                                          baseNorm: baseNorm)
                let folded = Unchecked((aggregation, update, up.file))
                let rejection: UpdateRejection?
                let norm: Double
                do {
                    let spent: Double
                    (rejection, norm, spent) = try await ComputeLane.run {
                        let t0 = ContinuousClock.now
                        let (aggregation, update, file) = folded.value
                        // Decoded into the coordinator's one scratch delta (not a copy per school),
                        // then validated and folded like any update.
                        try pipeline.read(file, into: update.delta)
                        let rejection = aggregation.submit(update, maxNorm: normBound)
                        let norm = rejection == nil ? aggregation.accepted.last!.norm : DeltaMath.norm(update.delta.buffer)
                        return (rejection, norm, Self.seconds(since: t0))
                    }
                    aggregateSeconds += spent
                } catch {
                    try? FileManager.default.removeItem(at: up.file)
                    leftOut[school] = "its update could not be read (\(error))"
                    coordinator.monitor.leftOut(school, reason: leftOut[school]!)
                    try ledger.ledger.record(AuditEntry(event: .updateRejected, round: round, school: school, baseVersion: base,
                                                        examples: examples, updateSHA256: up.digest.hex, wireBytes: Int(up.size),
                                                        reason: leftOut[school]))
                    continue
                }
                try? FileManager.default.removeItem(at: up.file)
                try ledger.received(update, sha256: up.digest.hex, norm: norm, rejection: rejection)
                schoolFigures[school]?.updateNorm = norm
                schoolFigures[school]?.accepted = rejection == nil
                if let rejection {
                    leftOut[school] = "update rejected: \(rejection)"
                    coordinator.monitor.leftOut(school, reason: leftOut[school]!)
                    progress("round \(round): \(school) update rejected: \(rejection)")
                } else {
                    coordinator.monitor.accepted()
                    weightedLoss += (metrics["train_loss"] ?? 0) * Double(examples)
                    progress(String(format: "round %d: %@ update accepted (%d examples, loss %.4f, norm %.3f)",
                                    round, school, examples, metrics["train_loss"] ?? .nan, norm))
                }
            default:
                continue
            }
        }
        return try await finishRound(round, base: base, selected: selected, plan: plan, start: start, aggregation: aggregation,
                                     roundModel: roundModel, leftOut: leftOut, weightedLoss: weightedLoss, aggregateSeconds: aggregateSeconds,
                                     schoolFigures: schoolFigures, events: &events)
    }

    /// Commits (or aborts) the round from what its aggregation holds, has the schools evaluate
    /// the new version, and records the round's figures: the same for plain and secure rounds.
    func finishRound(_ round: Int, base: String, selected: [String], plan: LocalTrainingPlan, start: ContinuousClock.Instant,
                     aggregation: AggregationRound, roundModel: BertModel? = nil, leftOut: [String: String], weightedLoss: Double, aggregateSeconds: Double,
                     schoolFigures: [String: SchoolRound], events: inout AsyncStream<HubEvent>.Iterator) async throws -> FederatedRoundReport {
        let cfg = config
        var aggregateSeconds = aggregateSeconds
        let bytes = hub.closeRound()
        coordinator.monitor.enter(.aggregating)
        let global = Unchecked(global)
        let commit = Unchecked(aggregation)
        let adapters = Unchecked(roundModel)
        let quorum = cfg.rounds.quorum
        let (committed, commitSpent) = try await ComputeLane.run {
            let t0 = ContinuousClock.now
            guard let lora = adapters.value else {
                return (commit.value.commit(to: global.value.parameters, quorum: quorum), Self.seconds(since: t0))
            }
            // LoRA: the mean B and head delta go into the round model, then W + (α/r)·B̄·A becomes the new global.
            let done = commit.value.commit(to: lora.parameters, quorum: quorum)
            if done {
                let merged = lora.mergedLoRA()  // kept alive while its (non-owning) buffer view is read
                withExtendedLifetime(merged) { global.value.parameters.buffer.copy(from: merged.parameters.buffer) }
            }
            return (done, Self.seconds(since: t0))
        }
        aggregateSeconds += commitSpent
        var testSeconds = 0.0
        if let failure = aggregation.commitFailure {
            // The strategy may have moved its server state (FedAdam's moments): take it back from the base.
            _ = try? ledger.restoreState(of: strategy, from: base)
            try ledger.abort(round: round, reason: failure)
            progress("round \(round): ABORTED (\(failure)); version \(base.prefix(12)) stays")
        }
        var test: [String: Double] = [:]
        let examples = aggregation.totalExamples
        if committed {
            let bySchool = Dictionary(aggregation.accepted.map { ($0.school, $0.exampleCount) }, uniquingKeysWith: { a, _ in a })
            let ledger = Unchecked(ledger), strategy = Unchecked(strategy)
            coordinator.monitor.enter(.committing)
            let written: Double
            (version, written) = try await ComputeLane.run {
                let t0 = ContinuousClock.now
                let id = try ledger.value.commit(round: round, global: global.value, strategy: strategy.value, metrics: [:], examplesBySchool: bySchool)
                return (id, Self.seconds(since: t0))
            }
            aggregateSeconds += written
            if let observe = coordinator.observeCommit {
                (test, testSeconds) = try await ComputeLane.run {
                    let t0 = ContinuousClock.now
                    return (try observe(global.value), Self.seconds(since: t0))
                }
            }
            progress("round \(round): committed version \(version.prefix(12)) from \(aggregation.accepted.count) update(s), \(examples) examples")
            referenceMedian = UpdateBounds.median(Array(bySchool.values))
        } else if aggregation.commitFailure == nil {
            let reason = "quorum not reached: \(aggregation.accepted.count) of \(selected.count) updates accepted, \(quorum) required"
            try ledger.abort(round: round, reason: reason)
            progress("round \(round): ABORTED (\(reason)); version \(base.prefix(12)) stays")
        }
        var report = FederatedRoundReport(
            round: round, baseVersion: base, version: version, committed: committed, selected: selected,
            accepted: aggregation.accepted.map(\.school), leftOut: leftOut, examples: examples,
            trainLoss: examples > 0 ? weightedLoss / Double(examples) : .nan,
            // A secure round has no norm per school (only its mean's).
            updateNorms: Dictionary(aggregation.accepted.filter { $0.norm.isFinite }.map { ($0.school, $0.norm) }, uniquingKeysWith: { a, _ in a }),
            bytesUp: bytes?.bytesUp ?? 0, bytesDown: bytes?.bytesDown ?? 0, evaluation: [:], evaluationExamples: 0,
            evaluatedSchools: [], test: test, aggregateSeconds: aggregateSeconds, seconds: 0)
        report.testSeconds = testSeconds
        report.schoolFigures = schoolFigures
        if committed && cfg.rounds.federatedEvaluation {
            coordinator.monitor.enter(.evaluating)
            try await evaluate(round: round, plan: plan, report: &report, events: &events)
        }
        report.seconds = Self.seconds(since: start)
        recordHistory(report)
        return report
    }

    /// Asks every connected school to score the current version; combines their metrics weighted by examples.
    func evaluate(round: Int, plan: LocalTrainingPlan, report: inout FederatedRoundReport,
                  events: inout AsyncStream<HubEvent>.Iterator) async throws {
        let schools = hub.connectedSchools
        guard !schools.isEmpty else { return }
        let model: ObjectRef, modelFile: URL
        do { (model, modelFile) = try await modelRef(version) } catch {
            logger.error("round \(round): no federated evaluation, the new version is not served: \(error)")
            return
        }
        var nonces: [String: WireToken] = [:]
        for s in schools { nonces[s] = Self.nonce() }
        hub.openRound(OpenRound(number: round, task: .evaluate, model: model, modelFile: modelFile,
                                expected: nonces.mapValues { Expectation(nonce: $0) }, updateSize: 0, patch: await patchRef(version)))
        var pending = Set(schools)
        for (school, _) in await assign(schools, round: round, task: .evaluate, model: model, plan: plan, nonces: nonces) {
            pending.remove(school)
        }
        let (deadline, task) = timer(after: config.rounds.evaluationDeadline)
        defer { task.cancel() }
        var sums: [String: Double] = [:], counts: [String: Int] = [:]
        var total = 0
        var evaluated: [String] = []
        while !pending.isEmpty {
            guard let event = await events.next() else { throw CancellationError() }
            switch event {
            case .timer(let t) where t == deadline:
                logger.notice("round \(round): evaluation deadline passed without \(pending.sorted().joined(separator: ", "))")
                pending.removeAll()
            case .disconnected(let school):
                pending.remove(school)
            case .stopRequested:
                pending.removeAll()  // the round is committed; its evaluation ends with what came in
            case .result(let school, let r):
                guard pending.contains(school), r.round == UInt64(round), r.task == .evaluate, r.nonce == nonces[school] else { continue }
                pending.remove(school)
                guard r.status == .completed else {
                    let why = "the school reported \(r.status.rawValue)" + (r.declineReason.map { ": \($0)" } ?? "")
                    report.evaluationRefused[school] = why
                    try ledger.ledger.record(AuditEntry(event: .evaluationRejected, round: round, school: school, newVersion: version, reason: why))
                    progress("round \(round): \(school) did not evaluate: \(why)")
                    continue
                }
                let limit = UInt64(config.strategy.maxExamplesPerSchool)
                let refusal = r.exampleCount == 0 ? "it reported 0 examples"
                    : r.exampleCount > limit ? "it reported \(r.exampleCount) examples, over the limit of \(limit) (strategy.max_examples_per_school)"
                    : ResultMetrics.problem(in: r.metrics).map { "it reports an impossible metric: \($0)" }
                if let refusal {
                    report.evaluationRefused[school] = refusal
                    try ledger.ledger.record(AuditEntry(event: .evaluationRejected, round: round, school: school,
                                                        examples: Int(clamping: r.exampleCount), reason: refusal))
                    progress("round \(round): \(school) evaluation result left out: \(refusal)")
                    continue
                }
                // The same cap as training weights: one school cannot own the combined metric.
                let n = UpdateBounds.weight(reported: Int(clamping: r.exampleCount),
                                            referenceMedian: referenceMedian ?? config.strategy.initialMedianExamples,
                                            multiple: config.strategy.weightCapMultiple).weight
                total += n
                evaluated.append(school)
                report.schoolFigures[school, default: SchoolRound(school: school, selected: false, accepted: false)].evaluationExamples = Int(clamping: r.exampleCount)
                report.schoolFigures[school]?.evaluationMetrics = Dictionary(r.metrics.map { ($0.key.value, $0.value) }, uniquingKeysWith: { a, _ in a })
                for (k, v) in r.metrics where v.isFinite && (v * Double(n)).isFinite {
                    sums[k.value, default: 0] += v * Double(n)
                    counts[k.value, default: 0] += n
                }
            default: continue
            }
        }
        let bytes = hub.closeRound()
        report.bytesDown += bytes?.bytesDown ?? 0
        // Only metrics every evaluating school reported.
        report.evaluation = sums.filter { counts[$0.key] == total }.mapValues { $0 / Double(max(total, 1)) }
        report.evaluationExamples = total
        report.evaluatedSchools = evaluated.sorted()
        if total > 0 {
            let shown = ["accuracy", "macro_f1", "micro_f1", "rmse", "loss"].compactMap { k in report.evaluation[k].map { String(format: "%@ %.4f", k, $0) } }
            progress("round \(round): federated evaluation over \(evaluated.count) school(s), \(total) validation examples: \(shown.joined(separator: ", "))")
        }
    }

    static func seconds(since t: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - t
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
