import Foundation
import PandoEngine
import PandoLedger

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
    /// - Parameter tokenizerFolder: the base model's folder; its tokenizer files go into every version.
    public init(folder: URL, federationID: String, tokenizerFolder: URL? = nil) throws {
        self.folder = folder
        self.federationID = federationID
        ledger = try CoordinatorLedger(folder: folder)
        let fm = FileManager.default
        companionFiles = tokenizerFolder.map { source in
            ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
                .map { source.appendingPathComponent($0) }.filter { fm.fileExists(atPath: $0.path) }
        } ?? []
        // Officers need the public half; make sure it sits beside the key even for an older key.
        if !fm.fileExists(atPath: publicKeyURL.path) {
            try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder)).publicKey.save(to: publicKeyURL)
        }
    }

    public var auditLogURL: URL { ledger.auditURL }
    public var publicKeyURL: URL { CoordinatorLedger.defaultKeyURL(in: folder).appendingPathExtension("pub") }

    /// Writes `model` as a staged (not yet visible) version.
    public func stage(_ model: BertModel) throws -> StagedVersion {
        try ledger.store.stage { try model.save(to: $0, copying: companionFiles) }
    }

    /// Starts the federation with `global` as its base version, or reopens the
    /// existing one and loads its head version's weights into `global` (its
    /// model and head must match). Returns the head version and the next round number.
    public func open(global: BertModel, task: String) throws -> (version: String, nextRound: Int, resumed: Bool) {
        guard let federation = try ledger.federation() else {
            let base = try stage(global)
            let record = try ledger.createFederation(id: federationID, name: federationID, task: task, base: base)
            return (record.id, 1, false)
        }
        guard federation.task == task else {
            throw LedgerError("\(folder.path) holds federation '\(federation.id)' for a \(federation.task) task, not \(task): use another state folder")
        }
        guard let head = try ledger.head() else { throw LedgerError("\(folder.path): the federation has no head version") }
        guard ledger.store.hasWeights(head.id) else { throw LedgerError("\(folder.path): head version \(head.id.prefix(12)) has no weights on disk") }
        let (model, _) = try BertModel.load(from: ledger.store.folder(of: head.id))
        guard model.layout == global.layout, model.head == global.head else {
            throw LedgerError("\(folder.path) holds federation '\(federation.id)' of another model or label set: use another state folder")
        }
        global.parameters.buffer.copy(from: model.parameters.buffer)
        let next = (try ledger.rounds().map(\.number).max() ?? 0) + 1
        return (head.id, next, true)
    }

    /// Records the start of a round from the head with the strategy and the plan sent to schools.
    public func startRound(strategy: any Strategy, plan: LocalTrainingPlan, maxUpdateNorm: Double, quorum: Int,
                           fractionPerRound: Double) throws -> (number: Int, base: String) {
        var parameters = strategy.parameters.mapValues { CanonicalJSON.double($0) }
        parameters["localEpochs"] = .int(plan.epochs)
        parameters["localLearningRate"] = .double(decimal(plan.learningRate))
        parameters["localBatchSize"] = .int(plan.batchSize)
        parameters["maxLength"] = .int(plan.maxLength)
        if let mu = plan.proximalMu { parameters["proximalMu"] = .double(decimal(mu)) }
        parameters["maxUpdateNorm"] = .double(maxUpdateNorm)
        parameters["quorum"] = .int(quorum)
        parameters["fractionPerRound"] = .double(fractionPerRound)
        let round = try ledger.startRound(strategy: strategy.name, parameters: parameters)
        return (round.number, round.baseVersion)
    }

    public func selected(_ school: String, round: Int, base: String) throws {
        try ledger.record(AuditEntry(event: .schoolSelected, round: round, school: school, baseVersion: base))
    }

    /// The coordinator's side: the update as received, accepted (`rejection` nil) or not.
    public func received(_ update: ModelUpdate, sha256: String, norm: Double, rejection: UpdateRejection?) throws {
        try ledger.record(AuditEntry(event: rejection == nil ? .updateReceived : .updateRejected, round: update.round,
                                     school: update.school, baseVersion: update.baseVersion, examples: update.exampleCount,
                                     updateSHA256: sha256, updateL2Norm: norm, wireBytes: update.wireBytes,
                                     reason: rejection?.description))
    }

    /// Writes the new global weights as a version and commits the round; returns the version id.
    public func commit(round: Int, global: BertModel, metrics: [String: Double], examplesBySchool: [String: Int]) throws -> String {
        let staged = try stage(global)
        return try ledger.commitRound(round, version: staged, metrics: metrics.filter { $0.value.isFinite },
                                      examplesBySchool: examplesBySchool).id
    }

    public func abort(round: Int, reason: String) throws {
        try ledger.abortRound(round, reason: reason)
    }

    /// Releases the state folder's lock.
    public func close() { ledger.close() }
}
