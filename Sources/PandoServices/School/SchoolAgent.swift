import Foundation
import Logging
import NIOConcurrencyHelpers
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
import PandoText
import PandoTraining
import PandoTransport
import PandoWire

/// What a school agent reports as it works (for progress displays; numbers only).
public enum SchoolEvent: Sendable {
    case connected
    case assignment(round: Int, task: RoundTask)
    /// Local training progress, in tenths (0.1, 0.2, …).
    case training(round: Int, fraction: Double)
    case fetched(round: Int, bytes: UInt64, cached: Bool)
    case trained(round: Int, examples: Int, metrics: [String: Double])
    case sent(round: Int, bytes: UInt64)
    case evaluated(round: Int, examples: Int, metrics: [String: Double])
    case declined(round: Int, reason: String)
}

/// The school's side of the federation: keeps one outbound connection to the
/// coordinator and answers its assignments, one at a time.
///
/// For a `train` assignment it fetches the global version by SHA-256 (unless cached),
/// fine-tunes it on the school's training data with the shared engine
/// (`LocalUpdater`), writes the delta, records it in its own `SchoolLog` (before
/// sending: the log is written ahead), offers it, and sends the `roundResult`. For an
/// `evaluate` assignment it scores the version on its validation data and returns
/// aggregate metrics only. The data never leaves this object: only weights, counts and
/// metrics go on the wire.
public final class SchoolAgent: @unchecked Sendable {
    public let configuration: SchoolConfiguration
    public let client: SchoolClient
    let logger: Logger
    let training: LabeledDataset
    let validation: LabeledDataset?
    let tokenizer: BertTokenizer
    let config: BertConfig
    let head: ClassifierHead
    let labelSet: LabelSetID
    let scoreRange: [Int]?
    let schoolLog: SchoolLog
    /// Hook for progress displays.
    public var onEvent: (@Sendable (SchoolEvent) -> Void)?
    /// Test hook: alters the delta file after local training, before it is offered.
    var tamper: (@Sendable (URL) throws -> Void)?
    /// Test hook: sees each assignment and its connection before the school acts on it.
    var onAssignment: (@Sendable (RoundAssignment, PandoConnection) -> Void)?
    /// Test hook: called after each uploaded chunk (a slow link).
    var uploadPacing: (@Sendable (UInt64, UInt64) async -> Void)?
    /// Test hook: changes the metrics of a result before it is sent (a school that lies).
    var alterMetrics: (@Sendable (RoundTask, [WireToken: Double]) -> [WireToken: Double])?
    /// DP-SGD's sampling and noise: nil is a fresh cryptographic generator each round; a test
    /// may set a seeded one to reproduce a round (which then protects nothing).
    var privacyRandomness: DPRandomness?
    /// Test hook: asked at each secure-aggregation stage (`keys`, `shares`, `masked-input`,
    /// `unmasking`); true makes the school vanish there (its connection is closed).
    var secureDropAt: (@Sendable (String) -> Bool)?
    /// Test hook: the trained values and the weight a secure round masks, before masking.
    var observeSecureInput: (@Sendable ([Float], UInt32) -> Void)?

    /// The versions this school accepted (read back from its log at start).
    private let lineage: NIOLockedValueBox<ModelLineage>
    /// This school's ids of the base model, per head seed and pooling (`baseVersionID`).
    private let baseIDs = NIOLockedValueBox<[String: BaseIDs]>([:])

    /// State that survives reconnects: an update the coordinator may not have stored yet.
    private let pending = NIOLockedValueBox<PendingUpload?>(nil)
    /// The result of the last update delivered, for an assignment the coordinator repeats
    /// (it re-sends one when a school reconnects; the school may have finished in between).
    private let lastResult = NIOLockedValueBox<RoundResult?>(nil)
    /// The last assignment this school declined: repeated, it is answered the same way without
    /// a second entry in the school's log (one assignment, one decline).
    private let lastDecline = NIOLockedValueBox<RoundResult?>(nil)
    var updater: LocalUpdater?
    var encodedCache: (maxLength: Int, train: EncodedDataset, validation: EncodedDataset?)?

    struct PendingUpload: Sendable {
        var assignment: RoundAssignment
        var file: URL
        var digest: ObjectDigest
        var size: UInt64
        var examples: Int
        var metrics: [String: Double]
        /// Under secure aggregation: the peers masked with (echoed in the result).
        var maskedWith: [WireToken]? = nil
    }

    /// Loads the school's data as the configuration says and checks it against the
    /// federation's label set; refuses (throws) on unreadable data, labels outside the
    /// federation's set, or a bad certificate, before anything connects.
    public convenience init(configuration: SchoolConfiguration, logger: Logger) throws {
        let labelMap = configuration.task == .regression ? nil : try LabelMap(names: configuration.labels)
        let all: LabeledDataset
        do { all = try configuration.format.load(configuration.data, labels: labelMap) } catch {
            throw RoundError("school data \(configuration.data.path): \(error)")
        }
        let training: LabeledDataset, validation: LabeledDataset?
        if let file = configuration.validation {
            training = all
            do { validation = try configuration.format.load(file, labels: labelMap ?? all.labels) } catch {
                throw RoundError("validation data \(file.path): \(error)")
            }
        } else if configuration.validationFraction > 0, all.count >= 10 {
            var rng = SplitMix64(seed: 0x5C4001)
            let (t, v) = all.stratifiedSplit(validationFraction: configuration.validationFraction, using: &rng)
            training = t
            validation = v
        } else {
            training = all
            validation = nil
        }
        try self.init(configuration: configuration, training: training, validation: validation, logger: logger)
    }

    /// An agent over data already in memory (`pando simulate` hands each school its shard).
    public init(configuration: SchoolConfiguration, training: LabeledDataset, validation: LabeledDataset?, logger: Logger) throws {
        guard training.count > 0 else { throw RoundError("the school has no training examples") }
        guard training.task == configuration.task else {
            throw RoundError("the school's data is \(training.task.rawValue) but the federation's task is \(configuration.task.rawValue)")
        }
        if configuration.task != .regression, training.labels.names != configuration.labels {
            throw RoundError("the school's label map \(training.labels.names) differs from the federation's \(configuration.labels)")
        }
        self.configuration = configuration
        self.logger = logger
        // PII goes before anything reads the text: the tokenizer, the model and every update
        // see placeholders. Only the counts by kind are kept.
        var scrubbed: (training: [PIIScrubber.Kind: Int], validation: [PIIScrubber.Kind: Int])?
        if configuration.pii.enabled {
            let scrubber: PIIScrubber
            do { scrubber = try configuration.pii.scrubber() } catch { throw RoundError("pii: \(error)") }
            let t = training.scrubbed(with: scrubber), v = validation?.scrubbed(with: scrubber)
            self.training = t.data
            self.validation = v?.data.count == 0 ? nil : v?.data
            scrubbed = (t.counts, v?.counts ?? [:])
            logger.notice("PII replaced before tokenisation: training data \(PIIScrubber.describe(t.counts)); validation data \(PIIScrubber.describe(v?.counts ?? [:]))")
        } else {
            self.training = training
            self.validation = validation?.count == 0 ? nil : validation
            logger.warning("PII scrubbing is off (pii.enabled: false): names, e-mail addresses and other PII in the school's text reach the model")
        }
        let model = configuration.baseModel
        do {
            tokenizer = try BertTokenizer(folder: model)
            config = try BertConfig(contentsOf: model.appendingPathComponent("config.json"))
        } catch {
            throw RoundError("base model \(model.path): \(error)")
        }
        head = ClassifierHead(objective: configuration.task.objective, labels: configuration.labels)
        labelSet = LabelSetID(task: configuration.task, labels: configuration.labels)
        scoreRange = configuration.task == .regression
            ? Evaluation.inferScoreRange(training.examples.compactMap { $0.target.score }) : nil
        for folder in [configuration.cache, configuration.cache.appendingPathComponent("versions"), configuration.cache.appendingPathComponent("outgoing")] {
            try PrivateFiles.folder(folder)
        }
        schoolLog = try SchoolLog(url: configuration.log)
        if let repaired = schoolLog.recovery { logger.warning("\(repaired)") }
        lineage = NIOLockedValueBox(ModelLineage(records: try schoolLog.records(), federation: configuration.federationID,
                                                 trusted: configuration.trustVersion))
        var transport = configuration.transport
        // The highest CRL number seen survives restarts in the cache (an older crl.pem put back is refused).
        transport.revocationNumberPath = transport.revocationNumberPath ?? configuration.cache.appendingPathComponent("crl-number.json").path
        client = try SchoolClient(configuration: transport, logger: logger)
        if let scrubbed {
            var event = SchoolLogEvent(.piiScrubbed, school: client.schoolID.value, round: 0, task: "prepare",
                                       federation: configuration.federationID)
            event.counts = Dictionary(uniqueKeysWithValues: PIIScrubber.Kind.allCases.map { k in
                ("training_" + k.rawValue, scrubbed.training[k] ?? 0)
            } + PIIScrubber.Kind.allCases.map { k in ("validation_" + k.rawValue, scrubbed.validation[k] ?? 0) })
            try schoolLog.append(event)
        }
    }

    /// Releases the school's log (its lock), once `run` has ended.
    public func close() { schoolLog.close() }

    public var trainingExamples: Int { training.count }
    public var validationExamples: Int { validation?.count ?? 0 }

    /// Serves the coordinator until cancelled, reconnecting with backoff whenever the
    /// connection fails. `maxAttempts` bounds consecutive failed connection attempts.
    public func run(maxAttempts: Int? = nil) async throws {
        try await client.run(maxAttempts: maxAttempts) { conn in
            self.onEvent?(.connected)
            if let p = self.pending.withLockedValue({ $0 }) {
                self.logger.info("re-sending the update of round \(p.assignment.round) after reconnecting")
                try await self.deliver(p, on: conn)
            }
            while true {
                let message = try await conn.receive()
                guard case .roundAssignment(let a) = message else {
                    throw TransportError.protocolViolation("expected roundAssignment, got \(message.type.name)")
                }
                try await self.handle(a, on: conn)
            }
        }
    }

    func handle(_ a: RoundAssignment, on conn: PandoConnection) async throws {
        onAssignment?(a, conn)
        let round = Int(clamping: a.round)
        onEvent?(.assignment(round: round, task: a.task))
        // The coordinator's audit head as it stated it: the school's log keeps it (fsynced)
        // before anything else, so `pando audit verify` can tell a rewritten coordinator log.
        if let head = a.auditHead {
            var anchor = SchoolLogEvent(.anchorSeen, school: conn.schoolID.value, round: round, task: a.task.rawValue,
                                        federation: configuration.federationID)
            anchor.auditSeq = Int(clamping: head.sequence)
            anchor.auditHash = head.hash.hex
            try schoolLog.append(anchor)
        } else {
            logger.warning("round \(round): the assignment carries no audit head (an older coordinator): nothing anchors its audit log here")
        }
        if a.task == .train {
            // The same assignment again (same round and nonce): send what this school already has.
            if let p = pending.withLockedValue({ $0 }), p.assignment.round == a.round, p.assignment.nonce == a.nonce {
                logger.info("round \(round): assignment repeated; sending the update already trained")
                return try await deliver(p, on: conn)
            }
            if let r = lastResult.withLockedValue({ $0 }), r.round == a.round, r.nonce == a.nonce {
                logger.info("round \(round): assignment repeated; the update was delivered, sending its result again")
                return try await conn.send(.roundResult(r))
            }
        }
        if let r = lastDecline.withLockedValue({ $0 }), r.round == a.round, r.task == a.task, r.nonce == a.nonce {
            logger.info("round \(round): assignment repeated; declined already (\(r.declineReason?.value ?? "")), sending that answer again")
            return try await conn.send(.roundResult(r))
        }
        logger.info("round \(round): \(a.task.rawValue) from version \(a.model.sha256.hex.prefix(12))")
        // A newer assignment supersedes an update the coordinator never took.
        pending.withLockedValue { $0 = nil }
        let plan: LocalTrainingPlan
        do { plan = try RoundParameters.decode(a.parameters) } catch {
            return try await decline(a, reason: "\(error)", code: "bad-parameters", on: conn)
        }
        // The school guards its own students' words: without differential privacy it never
        // trains, or sends, the embedding tables.
        guard plan.freezeEmbeddings || plan.privacy != nil || a.task == .evaluate else {
            return try await decline(a, reason: "the plan trains the token, position and token-type embeddings, whose update would reveal the words this school's students used; this school trains them only with differential privacy",
                                     code: "embeddings-not-frozen", on: conn)
        }
        if a.task == .train, let refusal = try privacyRefusal(plan, round: round) {
            return try await decline(a, reason: refusal.reason, code: refusal.code, on: conn)
        }
        guard a.parameters[RoundParameters.labelSetDigest] == labelSet.digest else {
            return try await decline(a, reason: "the federation's label set differs from this school's configuration (\(configuration.labels.count) labels): ask the district for the current federation settings",
                                     code: "label-set-mismatch", on: conn)
        }
        if a.task == .train, configuration.secureAggregation.required, a.secureAggregation == nil {
            return try await decline(a, reason: "this school trains only in rounds with secure aggregation (secure_aggregation.required), and this round has none",
                                     code: "secure-aggregation-required", on: conn)
        }
        var secure: SecAggSchool?
        if a.task == .train, let setup = a.secureAggregation {
            switch secureSession(setup, assignment: a, plan: plan, school: conn.schoolID.value) {
            case .failure(let refusal): return try await decline(a, reason: refusal.reason, code: refusal.code, on: conn)
            case .success(let session): secure = session
            }
        }
        // Only a version whose lineage this school can follow, recorded before it is used.
        let judged = lineage.withLockedValue { $0 }
        var baseID: String?
        if judged.needsBase(a.lineage), let seed = a.lineage?.initSeed {
            do { baseID = try await baseVersionID(seed: seed, pooling: plan.pooling, root: a.lineage?.chain.last?.version.hex) } catch {
                return try await decline(a, reason: "the base model \(configuration.baseModel.path) could not be rebuilt to check the lineage: \(error)",
                                         code: ModelLineage.Code.notBase, on: conn)
            }
        }
        switch judged.judge(model: a.model.sha256.hex, lineage: a.lineage, baseID: baseID) {
        case .decline(let code, let reason):
            return try await decline(a, reason: reason, code: code, on: conn)
        case .accept(let links, let basis):
            for link in links.reversed() {  // oldest first: each entry's parent is already in the log
                var entry = SchoolLogEvent(.versionAccepted, school: conn.schoolID.value, round: round, task: a.task.rawValue,
                                           federation: configuration.federationID)
                entry.version = link.version.hex
                entry.parent = link.parent?.hex
                entry.versionRound = link.round.map { Int(clamping: $0) }
                entry.basis = basis
                try schoolLog.append(entry)
            }
            lineage.withLockedValue { $0.add(links) }
            logger.info("round \(round): version \(a.model.sha256.hex.prefix(12)) accepted (\(links.count) new in its lineage, grounded on \(basis))")
        case .known:
            break
        }
        // Keys and shares first (a few small messages): then the coordinator knows who is in
        // before anyone spends minutes training.
        if let secure {
            do { try await exchangeKeys(secure, assignment: a, on: conn) } catch let next as SupersededAssignment {
                return try await handle(next.assignment, on: conn)
            } catch let e as SecAggError {
                return try await decline(a, reason: "\(e)", code: "secure-aggregation-failed", on: conn, status: .failed)
            }
        }
        let model: BertModel
        do {
            client.setActivity(.transferring)
            model = try await fetchVersion(a, pooling: plan.pooling, on: conn)
        } catch TransportError.transferFailed(let why) {
            client.setActivity(.idle)
            return try await decline(a, reason: "the global version could not be fetched (\(why))", code: "fetch-failed", on: conn, status: .failed)
        } catch let e as TransportError {
            throw e  // the connection is gone: reconnect
        } catch {
            client.setActivity(.idle)
            return try await decline(a, reason: "\(error)", code: "model-unusable", on: conn)
        }
        switch a.task {
        case .train:
            do { try await train(a, model: model, plan: plan, secure: secure, on: conn) } catch let next as SupersededAssignment {
                return try await handle(next.assignment, on: conn)
            }
        case .evaluate: try await evaluate(a, model: model, plan: plan, on: conn)
        }
        client.setActivity(.idle)
    }

    /// The version's weights: from the cache if they still hash to the version id, else
    /// fetched by hash (resuming a partial download).
    func fetchVersion(_ a: RoundAssignment, pooling: Pooling = .pooler, on conn: PandoConnection) async throws -> BertModel {
        let sha = a.model.sha256.hex
        let folder = configuration.cache.appendingPathComponent("versions/\(sha)", isDirectory: true)
        let weights = folder.appendingPathComponent("model.safetensors")
        let fm = FileManager.default
        var cached = fm.fileExists(atPath: weights.path)
        if cached, try await ComputeLane.run({ try Self.sha256(of: weights) }) != sha {
            logger.warning("cached global version \(weights.path) no longer matches its SHA-256 \(sha.prefix(12))…: fetching it again")
            try fm.removeItem(at: weights)
            cached = false
        }
        if !cached {
            try PrivateFiles.folder(folder)
            let limit = UInt64(4 * BertModel.layout(config: config, head: head).count) + (64 << 20)
            if let fetched = try await fetchPatched(a, into: weights, limit: limit, on: conn) {
                onEvent?(.fetched(round: Int(clamping: a.round), bytes: fetched, cached: false))
            } else {
                let stats = try await conn.fetchObject(a.model, kind: .checkpoint, to: weights, maxSize: limit)
                onEvent?(.fetched(round: Int(clamping: a.round), bytes: stats.bytesTransferred, cached: false))
            }
            pruneCache(keeping: sha)
        } else {
            onEvent?(.fetched(round: Int(clamping: a.round), bytes: 0, cached: true))
        }
        // The architecture is the base model's: a cached copy that differs is replaced.
        let configCopy = folder.appendingPathComponent("config.json"), baseConfig = configuration.baseModel.appendingPathComponent("config.json")
        if !fm.contentsEqual(atPath: configCopy.path, andPath: baseConfig.path) {
            try? fm.removeItem(at: configCopy)
            try fm.copyItem(at: baseConfig, to: configCopy)
            try PrivateFiles.restrict(configCopy)
        }
        // The federation's pooling (the plan says it): the head reads the encoder as the coordinator's does.
        let head = ClassifierHead(objective: self.head.objective, labels: self.head.labels, pooling: pooling)
        return try await ComputeLane.run {
            let (model, report) = try BertModel.load(from: folder, head: head)
            guard report.initialized.isEmpty else {
                throw RoundError("global version \(sha.prefix(12)) lacks \(report.initialized.joined(separator: ", ")) for this federation's head")
            }
            return model
        }
    }

    /// The version through its patch, when the assignment offers one from a version this school
    /// holds intact: the patch is fetched, applied to that version's file, and the result kept
    /// only if it hashes to the version id. Returns the bytes fetched, or nil (no patch, or it
    /// failed: the caller fetches the whole file).
    func fetchPatched(_ a: RoundAssignment, into weights: URL, limit: UInt64, on conn: PandoConnection) async throws -> UInt64? {
        guard let patch = a.patch else { return nil }
        let source = configuration.cache.appendingPathComponent("versions/\(patch.base.hex)/model.safetensors")
        guard FileManager.default.fileExists(atPath: source.path),
              (try? await ComputeLane.run({ try Self.sha256(of: source) })) == patch.base.hex else { return nil }
        let file = weights.deletingLastPathComponent().appendingPathComponent("model.patch")
        defer { try? FileManager.default.removeItem(at: file) }
        let stats: PandoConnection.TransferStats
        do { stats = try await conn.fetchObject(patch.object, kind: .checkpoint, to: file, maxSize: limit) } catch TransportError.transferFailed(let why) {
            logger.notice("round \(a.round): the version patch could not be fetched (\(why)); fetching the whole version")
            return nil
        }
        let expected = a.model.sha256.hex
        do {
            try await ComputeLane.run {
                try VersionPatch.apply(file, to: source, writing: weights)
                guard try Self.sha256(of: weights) == expected else { throw RoundError("the patched file does not hash to the version id") }
            }
        } catch {
            try? FileManager.default.removeItem(at: weights)
            logger.warning("round \(a.round): the version patch was not usable (\(error)); fetching the whole version")
            return nil
        }
        logger.info("round \(a.round): version \(expected.prefix(12)) rebuilt from \(patch.base.hex.prefix(12)) and a patch of \(patch.object.size) bytes")
        return stats.bytesTransferred
    }

    /// Keeps the newest two versions in the cache.
    func pruneCache(keeping sha: String) {
        let dir = configuration.cache.appendingPathComponent("versions")
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: dir.path) else { return }
        let dated = names.compactMap { name -> (String, Date)? in
            let attrs = try? fm.attributesOfItem(atPath: dir.appendingPathComponent(name).path)
            return (attrs?[.modificationDate] as? Date).map { (name, $0) }
        }.sorted { $0.1 > $1.1 }
        for (name, _) in dated.dropFirst(2) where name != sha {
            try? fm.removeItem(at: dir.appendingPathComponent(name))
        }
    }

    func encoded(maxLength: Int) -> (train: EncodedDataset, validation: EncodedDataset?) {
        let length = min(maxLength, config.maxPositions)
        if let c = encodedCache, c.maxLength == length { return (c.train, c.validation) }
        let train = EncodedDataset(training, tokenizer: tokenizer, maxLength: length)
        let validation = self.validation.map { EncodedDataset($0, tokenizer: tokenizer, maxLength: length) }
        encodedCache = (length, train, validation)
        return (train, validation)
    }

    func train(_ a: RoundAssignment, model: BertModel, plan: LocalTrainingPlan, secure: SecAggSchool? = nil, on conn: PandoConnection) async throws {
        if let secure { return try await trainSecurely(a, model: model, plan: plan, session: secure, on: conn) }
        let round = Int(clamping: a.round)
        client.setActivity(.training, progress: 0)
        let school = conn.schoolID.value
        let file = configuration.cache.appendingPathComponent("outgoing/update-r\(round).delta")
        let data = encoded(maxLength: plan.maxLength).train
        let model = try FederatedLoRA.roundModel(global: model, plan: plan, round: round) ?? model
        if updater == nil || updater!.model.layout != model.layout { updater = try LocalUpdater(like: model) }
        let updater = Unchecked(self.updater!)
        let clip = configuration.privacy?.maxGradientNorm, randomness = privacyRandomness
        var result: (String, [String: Double], TopKResidual?)
        do {
            let client = self.client, onEvent = self.onEvent
            result = try await ComputeLane.run {
                var shown = 0
                let update = try updater.value.train(school: school, data: data, from: model, round: round,
                                                     baseVersion: a.model.sha256.hex, plan: plan, clip: clip,
                                                     randomness: randomness) { fraction in
                    client.setActivity(.training, progress: fraction)
                    let tenths = Int(fraction * 10)
                    if tenths > shown, tenths < 10 {
                        shown = tenths
                        onEvent?(.training(round: round, fraction: Double(tenths) / 10))
                    }
                }
                let pipeline = UpdatePipeline(layout: update.delta.layout, plan: plan)
                guard pipeline.compression != .none else {
                    try UpdateFile.write(update.delta, selection: pipeline.selection, to: file)
                    return (update.wireSHA256(selection: pipeline.selection), update.metrics, nil)
                }
                let (encoded, left) = try self.compress(update, pipeline: pipeline, assignment: a)
                try CompressedUpdateFile.write(encoded, to: file)
                return (encoded.bytes.withUnsafeBytes { Digest.sha256($0) }, update.metrics, left)
            }
        } catch {
            client.setActivity(.idle)
            return try await decline(a, reason: "local training failed: \(error)", code: "training-failed", on: conn, status: .failed)
        }
        let privacy = try accountPrivacy(round: round, plan: plan, metrics: &result.1)
        try tamper?(file)
        let digest = try ObjectDigest(hex: tamper == nil ? result.0 : Self.sha256(of: file)).orThrow("bad digest")
        let size = UInt64((try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0)
        onEvent?(.trained(round: round, examples: data.count, metrics: result.1))
        let upload = PendingUpload(assignment: a, file: file, digest: digest, size: size, examples: data.count, metrics: result.1)
        // Written ahead, fsynced, before a byte is offered: the school's log never lacks an
        // update the coordinator could hold. (One it logged but the coordinator never
        // stored shows up in `pando audit verify` as a note naming why it was left out.)
        var logged = SchoolLogEntry(school: school, round: round, baseVersion: a.model.sha256.hex,
                                    updateSHA256: digest.hex, wireBytes: Int(size), examples: data.count,
                                    federation: configuration.federationID)
        logged.privacy = privacy
        try schoolLog.append(logged)
        // Top-k's new residual replaces the old one once the update is logged, before a byte is offered.
        if let residual = result.2 {
            try await ComputeLane.run { try residual.save(to: self.residualFile) }
        }
        pending.withLockedValue { $0 = upload }
        try await deliver(upload, on: conn)
    }

    /// Under DP: adds what this round spends, and the school's ε over every round it released,
    /// to `metrics`; returns the audit's `privacy` fields (nil without DP).
    func accountPrivacy(round: Int, plan: LocalTrainingPlan, metrics: inout [String: Double]) throws -> [String: CanonicalJSON]? {
        guard let spend = PrivacySpend(round: round, metrics: metrics) else { return nil }
        let delta = privacyDelta(plan), spent = try privacySpends()
        let roundEpsilon = try PrivacyAccounting.epsilon([spend], delta: delta)
        let total = try PrivacyAccounting.epsilon(spent + [spend], delta: delta)
        PrivacyAccounting.report(into: &metrics, delta: delta, roundEpsilon: roundEpsilon, totalEpsilon: total, spends: spent.count + 1)
        logger.info("round \(round): DP-SGD at sampling rate \(spend.samplingRate), noise multiplier \(spend.noiseMultiplier), \(spend.steps) steps: ε \(roundEpsilon) this round, \(total) in all (δ = \(delta), \(spent.count + 1) rounds)")
        return PrivacyAccounting.auditFields(from: metrics)
    }

    /// Every DP-SGD spend this school's log records for this federation, oldest first: the
    /// updates it released (each logged before a byte of it left), across restarts.
    func privacySpends() throws -> [PrivacySpend] {
        try schoolLog.records().compactMap { r in
            guard r["event"]?.stringValue == "updateSent", r["federation"]?.stringValue == configuration.federationID,
                  let fields = r["privacy"]?.objectValue, let round = r["round"]?.intValue else { return nil }
            return PrivacySpend(auditFields: fields, round: round)
        }
    }

    /// The δ this school accounts at: its budget's, else the plan's.
    func privacyDelta(_ plan: LocalTrainingPlan) -> Double { configuration.privacy?.delta ?? plan.privacy?.delta ?? 1e-5 }

    /// Why this school refuses the plan's privacy, if it does: a budget but no DP in the plan,
    /// or a round that would take its ε over the budget (ε composed over every round it has
    /// spent in, and this one at its own sampling rate).
    func privacyRefusal(_ plan: LocalTrainingPlan, round: Int) throws -> (code: WireToken, reason: String)? {
        guard let budget = configuration.privacy else { return nil }
        guard let dp = plan.privacy else {
            return ("privacy-required", "this school trains only with differential privacy (privacy.target_epsilon \(budget.targetEpsilon)) and the plan has none")
        }
        let schedule = LocalUpdater.privateSchedule(plan, examples: training.count)
        let clip = Double(budget.maxGradientNorm ?? dp.maxGradientNorm)
        let spent = try privacySpends()
        let next = PrivacySpend(round: round, samplingRate: schedule.samplingRate, noiseMultiplier: Double(Float(dp.noiseMultiplier)),
                                steps: schedule.steps, maxGradientNorm: clip)
        let before = try PrivacyAccounting.epsilon(spent, delta: budget.delta)
        let after = try PrivacyAccounting.epsilon(spent + [next], delta: budget.delta)
        guard after <= budget.targetEpsilon else {
            return ("privacy-budget-exceeded", String(format: "this round would take the school's ε from %.4g to %.4g (δ = %.3g, %d earlier rounds), over its budget of %.4g",
                                                     before, after, budget.delta, spent.count, budget.targetEpsilon))
        }
        return nil
    }

    /// `update` compressed as the plan says, with top-k's residual from earlier rounds added;
    /// returns the encoding and the residual this round leaves (saved once the update is logged).
    func compress(_ update: ModelUpdate, pipeline: UpdatePipeline, assignment a: RoundAssignment) throws
        -> (CompressedUpdateFile.Encoded, TopKResidual?) {
        let round = Int(clamping: a.round)
        let key = TopKResidual.Key(federation: configuration.federationID ?? "", selection: pipeline.selection)
        let previous = pipeline.topKCount == nil ? nil
            : residual(for: key, round: round, lineage: Set(a.lineage?.chain.map(\.version.hex) ?? []))
        let encoded = try CompressedUpdateFile.encode(update.delta, pipeline: pipeline, residual: previous?.values)
        return (encoded, encoded.residual.map { TopKResidual(key: key, round: round, baseVersion: a.model.sha256.hex, values: $0) })
    }

    /// Where top-k's error-feedback residual lives (``TopKResidual``).
    var residualFile: URL { configuration.cache.appendingPathComponent("topk-residual.bin") }

    /// The residual to add to a top-k delta of `round`, or nil (none yet, or dropped with the reason logged).
    func residual(for key: TopKResidual.Key, round: Int, lineage: Set<String>) -> TopKResidual? {
        let stored: TopKResidual?
        do { stored = try TopKResidual.load(from: residualFile) } catch {
            logger.warning("round \(round): the top-k residual cannot be read (\(error)); starting without it")
            return nil
        }
        guard let stored else { return nil }
        if let why = stored.unusable(for: key, round: round, lineage: lineage) {
            logger.notice("round \(round): the top-k residual is not used: \(why)")
            return nil
        }
        logger.info("round \(round): adding the top-k residual left by round \(stored.round)")
        return stored
    }

    /// Offers the update (resuming a cut upload) and sends the result.
    func deliver(_ p: PendingUpload, on conn: PandoConnection) async throws {
        let round = Int(clamping: p.assignment.round)
        client.setActivity(.transferring)
        let id = WireToken("update-r\(round)")!
        do {
            let stats = try await conn.sendObject(id: id, kind: .update, file: p.file, sha256: p.digest, progress: uploadPacing)
            onEvent?(.sent(round: round, bytes: stats.bytesTransferred))
        } catch TransportError.transferFailed(let why) {
            // Refused: the round closed, or the coordinator already stored this very update
            // before the link dropped. The result goes anyway: the coordinator matches it to
            // what it holds, or ignores it as stale.
            logger.notice("round \(round): the coordinator did not take the upload (\(why)); sending the result")
        }
        let metrics = alterMetrics?(.train, Self.wireMetrics(p.metrics)) ?? Self.wireMetrics(p.metrics)
        let result = RoundResult(
            round: p.assignment.round, task: .train, nonce: p.assignment.nonce, status: .completed,
            update: ObjectRef(id: id, size: p.size, sha256: p.digest), exampleCount: UInt64(p.examples), metrics: metrics)
        var sent = result
        sent.maskedWith = p.maskedWith
        try await conn.send(.roundResult(sent))
        lastResult.withLockedValue { $0 = sent }
        pending.withLockedValue { $0 = nil }
        try? FileManager.default.removeItem(at: p.file)
        logger.info("round \(round): result sent (update of \(p.size) bytes, \(p.examples) examples)")
        client.setActivity(.idle)
    }

    func evaluate(_ a: RoundAssignment, model: BertModel, plan: LocalTrainingPlan, on conn: PandoConnection) async throws {
        let round = Int(clamping: a.round)
        guard let data = encoded(maxLength: plan.maxLength).validation else {
            return try await decline(a, reason: "no validation data (set school.validation or validation_fraction)", code: "no-validation-data", on: conn)
        }
        client.setActivity(.evaluating)
        let task = configuration.task, labels = configuration.labels, range = scoreRange
        let metrics: EvaluationMetrics
        do {
            metrics = try await ComputeLane.run {
                let inference = BatchedInference(model: model, batchSize: 64, maxLength: data.sequences.map(\.count).max() ?? 8)
                return try Evaluation.metrics(logits: inference.logits(data.sequences), targets: data.targets, task: task,
                                              labels: labels, scoreRange: range)
            }
        } catch {
            return try await decline(a, reason: "evaluation failed: \(error)", code: "evaluation-failed", on: conn, status: .failed)
        }
        onEvent?(.evaluated(round: round, examples: data.count, metrics: metrics.summary))
        try await conn.send(.roundResult(RoundResult(
            round: a.round, task: .evaluate, nonce: a.nonce, status: .completed, update: nil,
            exampleCount: UInt64(data.count), metrics: alterMetrics?(.evaluate, Self.wireMetrics(metrics.summary)) ?? Self.wireMetrics(metrics.summary))))
    }

    /// Answers `a` with `status` and `code` (the token the coordinator audits); a decline is
    /// also written to the school's own log with `reason`, before the answer goes out.
    func decline(_ a: RoundAssignment, reason: String, code: WireToken, on conn: PandoConnection,
                 status: PandoWire.RoundStatus = .declined) async throws {
        logger.error("round \(a.round): \(status.rawValue) (\(code)): \(reason)")
        onEvent?(.declined(round: Int(clamping: a.round), reason: reason))
        client.setActivity(.idle)
        if status == .declined {
            var entry = SchoolLogEvent(.assignmentDeclined, school: conn.schoolID.value, round: Int(clamping: a.round), task: a.task.rawValue,
                                       federation: configuration.federationID)
            entry.version = a.model.sha256.hex
            entry.code = code.value
            entry.reason = reason
            try schoolLog.append(entry)
        }
        let answer = RoundResult(round: a.round, task: a.task, nonce: a.nonce, status: status,
                                 update: nil, exampleCount: 0, metrics: [:], declineReason: code)
        if status == .declined { lastDecline.withLockedValue { $0 = answer } }
        try await conn.send(.roundResult(answer))
    }

    /// The id of the federation's base model as this school rebuilds it: its own copy of the
    /// base model folder, with the tensors it lacks (task head, pooler) drawn from `seed`,
    /// saved as the coordinator saves a version (with the federation's `pooling`: a cls or mean
    /// head writes its unused dense layer with zero rows) and hashed. Cached per seed and pooling.
    /// A cls or mean federation whose base version (`root`, the lineage's oldest) was made before
    /// those zero rows is recognised by the id of that older form.
    func baseVersionID(seed: UInt64, pooling: Pooling = .pooler, root: String? = nil) async throws -> String {
        func answer(_ ids: BaseIDs) -> String { root != nil && ids.legacy == root ? ids.legacy! : ids.current }
        let key = "\(seed) \(pooling.rawValue)"
        if let ids = baseIDs.withLockedValue({ $0[key] }), ids.current == root || pooling == .pooler || ids.legacy != nil {
            return answer(ids)
        }
        let folder = configuration.cache.appendingPathComponent("base-check-\(UUID().uuidString)", isDirectory: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = configuration.baseModel
        let head = ClassifierHead(objective: self.head.objective, labels: self.head.labels, pooling: pooling)
        let ids = try await ComputeLane.run {
            try PrivateFiles.folder(folder)
            let model = try BertModel.load(from: source, head: head, seed: seed).0
            try model.save(to: folder)
            let id = try Self.sha256(of: folder.appendingPathComponent("model.safetensors"))
            guard head.pooling != .pooler, id != root else { return BaseIDs(current: id, legacy: nil) }
            try model.save(to: folder, fullDenseLayer: true)
            return BaseIDs(current: id, legacy: try Self.sha256(of: folder.appendingPathComponent("model.safetensors")))
        }
        baseIDs.withLockedValue { $0[key] = ids }
        return answer(ids)
    }

    /// This school's ids of the base model for one seed: as versions are written now, and for a
    /// cls or mean head, as they were written before its unused dense layer had zero rows.
    struct BaseIDs: Sendable { var current: String; var legacy: String? }

    /// Finite metrics under valid token names (at most `RoundResult.maxMetrics`).
    static func wireMetrics(_ m: [String: Double]) -> [WireToken: Double] {
        var out: [WireToken: Double] = [:]
        for (k, v) in m.sorted(by: { $0.key < $1.key }) where v.isFinite && out.count < RoundResult.maxMetrics {
            if let t = WireToken(k) { out[t] = v }
        }
        return out
    }

    static func sha256(of file: URL) throws -> String {
        try Digest.sha256(fileAt: file)
    }
}

extension Optional {
    func orThrow(_ message: String) throws -> Wrapped {
        guard let v = self else { throw RoundError(message) }
        return v
    }
}
