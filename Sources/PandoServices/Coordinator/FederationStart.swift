import Foundation
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
import PandoTraining

/// Starts a federation in a new state folder from a plain pretrained encoder folder, exactly
/// as `pando-coordinator` would at its first start: the task head (and a pooler the folder
/// lacks) drawn with `seed`, the tokenizer files copied in, the version content-addressed, the
/// signing key made and the `federationCreated` record written. A coordinator whose
/// coordinator.yaml names the same federation id, task, labels, base model and `federation.seed`
/// continues from it; schools rebuild the same base version from their own copy.
public enum FederationStart {
    /// Why `labels` cannot be the label set of `task` (the rule coordinator.yaml follows), or nil.
    public static func labelProblem(task: TaskKind, labels: [String]) -> String? {
        guard task != .regression else { return labels.isEmpty || labels == ["score"] ? nil : "a regression federation has no labels (its one output is the score)" }
        guard labels.count >= task.minimumLabels else {
            return task.minimumLabels == 2 ? "list at least two class or level names" : "list the label names"
        }
        if let dup = Dictionary(grouping: labels, by: { $0 }).first(where: { $0.value.count > 1 })?.key { return "'\(dup)' is listed twice" }
        return nil
    }

    /// Creates the federation; returns the base version's id. Refuses a folder that already
    /// holds one, a label set that breaks the rule, and an int8 (inference-only) checkpoint.
    public static func create(state: URL, federationID: String, baseModel: URL, task: TaskKind, labels: [String], seed: UInt64,
                              maxLength: Int = 128, pooling: Pooling = .pooler) throws -> String {
        if let problem = labelProblem(task: task, labels: labels) { throw RoundError("--labels: \(problem)") }
        guard !federationID.isEmpty else { throw RoundError("--federation: must not be empty") }
        if FileManager.default.fileExists(atPath: state.appendingPathComponent("state.sqlite").path) {
            throw RoundError("\(state.path) already holds a coordinator state: use another folder")
        }
        let head = ClassifierHead(objective: task.objective, labels: task == .regression ? ["score"] : labels, pooling: pooling)
        let (global, _) = try BertModel.load(from: baseModel, head: head, seed: seed)
        guard !global.inferenceOnly else {
            throw RoundError("\(baseModel.path) is an int8 checkpoint (pando quantize), for inference only: a federation starts from the float32 model")
        }
        try PrivateFiles.folder(state)
        let ledger = try FederationLedger(folder: state, federationID: federationID, tokenizerFolder: baseModel, newSigningKey: true)
        defer { ledger.close() }
        ledger.versionRecord = .federatedVersion(federation: federationID, task: task, labels: head.labels, pooling: head.pooling,
                                                 maxLength: maxLength, baseModel: baseModel.path)
        return try ledger.open(global: global, task: task.rawValue).version
    }
}
