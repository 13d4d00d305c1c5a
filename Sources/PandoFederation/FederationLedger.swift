import Crypto
import Foundation
import PandoEngine
import PandoLedger
import PandoText
import PandoTraining

extension ModelUpdate {
    /// Hex SHA-256 of the update as it goes on the wire: the delta's Float32
    /// values in layout order, little-endian (`wireBytes` bytes). Hashed in
    /// place, without a copy, on little-endian machines.
    public var wireSHA256: String {
        let values = delta.buffer
        #if _endian(little)
        return withExtendedLifetime(delta) {
            Digest.sha256(UnsafeRawBufferPointer(start: values.base, count: 4 * values.count))
        }
        #else
        let bytes = (0..<values.count).flatMap { i -> [UInt8] in
            withUnsafeBytes(of: values[i].bitPattern.littleEndian) { Array($0) }
        }
        return bytes.withUnsafeBytes { Digest.sha256($0) }
        #endif
    }

    /// Hex SHA-256 of the update as `UpdateFile.write(_:selection:to:)` sends it: the
    /// selection's tensors only (little-endian hosts).
    public func wireSHA256(selection: TensorSelection) -> String {
        guard !selection.frozen.isEmpty else { return wireSHA256 }
        var hasher = SHA256()
        withExtendedLifetime(delta) {
            for spec in selection.trained {
                hasher.update(bufferPointer: UnsafeRawBufferPointer(start: delta.buffer.base + spec.offset, count: 4 * spec.count))
            }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// The coordinator's record keeper over a `CoordinatorLedger` state folder
/// (`state.sqlite`, `versions/<sha256>/`, `audit.jsonl`, `keys/`; see docs/audit-format.md):
/// the calls the round driver makes to record a round.
///
/// Every global version (the base model, then each committed round) is written
/// as a complete Hugging Face folder whose id is the SHA-256 of its
/// model.safetensors. Records hold identifiers, hashes and numbers only, never
/// text of the schools' data.
public final class FederationLedger {
    public let folder: URL
    public let ledger: CoordinatorLedger
    /// Federation id recorded when the folder is new (an existing folder keeps its own).
    public let federationID: String
    /// Tokenizer files copied into every version folder.
    public let companionFiles: [URL]

    /// Opens (creating if needed) the state folder and its signing key; takes the coordinator's lock.
    /// - Parameters:
    ///   - tokenizerFolder: the base model's folder; its tokenizer files go into every version.
    ///   - newSigningKey: create the signing key if an existing state lacks it (see `CoordinatorLedger`).
    public init(folder: URL, federationID: String, tokenizerFolder: URL? = nil, newSigningKey: Bool = false) throws {
        self.folder = folder
        self.federationID = federationID
        ledger = try CoordinatorLedger(folder: folder, newSigningKey: newSigningKey)
        let fm = FileManager.default
        companionFiles = tokenizerFolder.map { source in
            BertTokenizer.folderFiles
                .map { source.appendingPathComponent($0) }.filter { fm.fileExists(atPath: $0.path) }
        } ?? []
        // Officers need the public half; make sure it sits beside the key even for an older key.
        if !fm.fileExists(atPath: publicKeyURL.path) {
            try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder)).publicKey.save(to: publicKeyURL)
        }
    }

    public var auditLogURL: URL { ledger.auditURL }
    public var publicKeyURL: URL { CoordinatorLedger.defaultKeyURL(in: folder).appendingPathExtension("pub") }

    /// Written as `pando-training.json` into every version this ledger stages (task, labels,
    /// pooling, max length), so an exported version predicts as the federation evaluates it.
    public var versionRecord: TrainingRecord?

    /// Writes `model` as a staged (not yet visible) version.
    public func stage(_ model: BertModel) throws -> StagedVersion {
        try ledger.store.stage { folder in
            try model.save(to: folder, copying: companionFiles)
            try writeVersionRecord(in: folder)
        }
    }

    func writeVersionRecord(in folder: URL) throws {
        guard let versionRecord else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(versionRecord), to: folder.appendingPathComponent(TrainingRecord.fileName))
    }

    /// File in a version folder holding the strategy's server state after the round
    /// that made the version (FedAdam's moments); absent for stateless strategies.
    public static let strategyStateFile = "strategy-state.safetensors"

    /// Starts the federation with `global` as its base version, or reopens the
    /// existing one and loads its head version's weights into `global` (its
    /// model and head must match) and, when the head version carries state
    /// written by a strategy of the same name, that state into `strategy`.
    /// Returns the head version, the next round number, and whether
    /// strategy state was restored.
    public func open(global: BertModel, task: String, strategy: (any Strategy)? = nil) throws
        -> (version: String, nextRound: Int, resumed: Bool, restoredStrategyState: Bool) {
        guard let federation = try ledger.federation() else {
            let base = try stage(global)
            let record = try ledger.createFederation(id: federationID, name: federationID, task: task, base: base)
            return (record.id, 1, false, false)
        }
        guard federation.task == task else {
            throw LedgerError("\(folder.path) holds federation '\(federation.id)' for a \(federation.task) task, not \(task): use another state folder")
        }
        guard let head = try ledger.head() else { throw LedgerError("\(folder.path): the federation has no head version") }
        guard ledger.store.hasWeights(head.id) else { throw LedgerError("\(folder.path): head version \(head.id.prefix(12)) has no weights on disk") }
        // Re-hashed before use: a corrupt head would load without complaint and every round
        // would then fail when the schools check what they download.
        do { try ledger.store.checkIntact(head.id, files: head.files) } catch {
            throw LedgerError("\(error). The head version cannot be used: restore \(ledger.store.folder(of: head.id).path) from a backup, "
                + "or make an intact earlier version the head (`pando versions rollback --store \(folder.path) <version>`)")
        }
        let (model, _) = try BertModel.load(from: ledger.store.folder(of: head.id))
        guard model.layout == global.layout, model.head == global.head else {
            throw LedgerError("\(folder.path) holds federation '\(federation.id)' of another model or label set: use another state folder")
        }
        global.parameters.buffer.copy(from: model.parameters.buffer)
        let next = (try ledger.rounds().map(\.number).max() ?? 0) + 1
        let restored = try strategy.map { try restoreState(of: $0, from: head.id) } ?? false
        return (head.id, next, true, restored)
    }

    /// Loads `strategy`'s state from `version`'s folder when that version was made by a
    /// strategy of the same name and hyper-parameters; false when there is nothing to
    /// restore (a base version, another strategy or settings, a stateless one). A file that does not fit is an error naming it.
    public func restoreState(of strategy: any Strategy, from version: String) throws -> Bool {
        let buffers = strategy.state
        let url = ledger.store.folder(of: version).appendingPathComponent(Self.strategyStateFile)
        guard !buffers.isEmpty, FileManager.default.fileExists(atPath: url.path) else { return false }
        let file = try SafeTensors.File(url: url)
        // Moments of other hyper-parameters (another β or τ) would not be this strategy's.
        guard file.metadata["strategy"] == strategy.name, file.metadata["parameters"] == Self.describe(strategy.parameters) else {
            return false
        }
        for (name, buffer) in buffers {
            guard let entry = file.entries[name] else {
                throw LedgerError("\(url.path): no tensor '\(name)' for the \(strategy.name) state")
            }
            guard entry.elementCount == buffer.buffer.count else {
                throw LedgerError("\(url.path): '\(name)' has \(entry.elementCount) values, the model has \(buffer.buffer.count)")
            }
            try file.read(name, into: buffer.buffer)
        }
        return true
    }

    /// Records the start of a round from the head with the strategy and the plan sent to schools.
    /// `frozen` names the tables the plan freezes in this model (its family's names); nil
    /// records BERT's.
    public func startRound(strategy: any Strategy, plan: LocalTrainingPlan, maxUpdateNorm: Double?, quorum: Int,
                           fractionPerRound: Double, frozen: Set<String>? = nil, secureAggregation: Bool = false) throws -> (number: Int, base: String) {
        var parameters = strategy.parameters.mapValues { CanonicalJSON.double($0) }
        parameters["localEpochs"] = .int(plan.epochs)
        parameters["localLearningRate"] = .double(decimal(plan.learningRate))
        parameters["localBatchSize"] = .int(plan.batchSize)
        parameters["maxLength"] = .int(plan.maxLength)
        if let mu = plan.proximalMu { parameters["proximalMu"] = .double(decimal(mu)) }
        if plan.classBalance != .none { parameters["classBalance"] = .string(plan.classBalance.rawValue) }
        if let prior = plan.classPrior { parameters["classPrior"] = .array(prior.map { .double($0) }) }
        // Recorded for the privacy officer: which tables no school trains or sends this round.
        parameters["frozenTensors"] = .string(plan.freezeEmbeddings ? (frozen ?? TensorSelection.embeddingTables).sorted().joined(separator: ",") : "")
        // How updates travel this round: each transform the schools apply, with its parameters.
        parameters["updateCompression"] = .string(plan.compression.name)
        parameters["updateTransforms"] = .string(UpdatePipeline.describe(plan, secureAggregation: secureAggregation))
        parameters["maxUpdateNorm"] = maxUpdateNorm.map { .double($0) } ?? .string("auto")
        parameters["quorum"] = .int(quorum)
        parameters["fractionPerRound"] = .double(fractionPerRound)
        let round = try ledger.startRound(strategy: strategy.name, parameters: parameters)
        return (round.number, round.baseVersion)
    }

    /// Records `school` as selected, with the serial of the certificate its session presented
    /// (checked against the CA's event log by `pando audit verify --ca-log`).
    public func selected(_ school: String, round: Int, base: String, certificateSerial: String? = nil) throws {
        try ledger.record(AuditEntry(event: .schoolSelected, round: round, school: school, baseVersion: base,
                                     certificateSerial: certificateSerial))
    }

    /// The coordinator's side: the update as received, accepted (`rejection` nil) or not.
    public func received(_ update: ModelUpdate, sha256: String, norm: Double, rejection: UpdateRejection?) throws {
        var entry = AuditEntry(event: rejection == nil ? .updateReceived : .updateRejected, round: update.round,
                               school: update.school, baseVersion: update.baseVersion, examples: update.exampleCount,
                               updateSHA256: sha256, updateL2Norm: norm, wireBytes: update.wireBytes,
                               reason: rejection?.description)
        entry.weight = update.cappedWeight
        // The school's own account of its differential privacy, recomputed by `pando audit verify`.
        entry.privacy = PrivacyAccounting.auditFields(from: update.metrics)
        try ledger.record(entry)
    }

    /// A strategy's hyper-parameters as one stable string (`name=value`, sorted).
    static func describe(_ parameters: [String: Double]) -> String {
        parameters.keys.sorted().map { "\($0)=\(parameters[$0]!)" }.joined(separator: ",")
    }

    /// Writes the new global weights as a version, with `strategy`'s server state beside
    /// them (staged and installed together, so a restart continues from exactly this
    /// round), and commits the round; returns the version id.
    public func commit(round: Int, global: BertModel, strategy: (any Strategy)? = nil, metrics: [String: Double],
                       examplesBySchool: [String: Int]) throws -> String {
        let state = strategy?.state ?? [:]
        let staged = try ledger.store.stage { folder in
            try global.save(to: folder, copying: companionFiles)
            try writeVersionRecord(in: folder)
            guard let strategy, !state.isEmpty else { return }
            let tensors = state.keys.sorted().map { SafeTensors.Tensor(name: $0, shape: [state[$0]!.buffer.count], values: state[$0]!.buffer) }
            try SafeTensors.write(tensors, metadata: ["strategy": strategy.name, "parameters": Self.describe(strategy.parameters)],
                                  to: folder.appendingPathComponent(Self.strategyStateFile))
        }
        // School-level DP at the coordinator: the round's ε over every round so far (q = 1).
        var privacy: [String: CanonicalJSON]?
        if let dp = strategy as? DPFedAvg, let e = try? dp.epsilon(afterRounds: round) {
            privacy = ["mechanism": .string("dp-fedavg"), "accountant": .string("rdp"), "level": .string("school"),
                       "noiseMultiplier": .double(decimal(dp.noiseMultiplier)), "clip": .double(decimal(dp.clip)),
                       "expectedSchools": .int(dp.expectedSchools), "rounds": .int(round), "samplingRate": .double(1),
                       "delta": .double(dp.delta), "epsilon": .double(e)]
        }
        return try ledger.commitRound(round, version: staged, metrics: metrics.filter { $0.value.isFinite },
                                      examplesBySchool: examplesBySchool, privacy: privacy).id
    }

    public func abort(round: Int, reason: String) throws {
        try ledger.abortRound(round, reason: reason)
    }

    /// Releases the state folder's lock.
    public func close() { ledger.close() }
}
