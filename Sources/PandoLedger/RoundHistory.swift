import Foundation
import GRDB

/// What one round did, as the coordinator stores it for the status page, the JSON API and
/// `pando versions show`: numbers and identifiers only (school ids, version ids, metric
/// names, reason codes), never text of the schools' data. Operational history, not part of
/// the signed audit trail (the audit log already holds every update's hash, norm and size).
public struct RoundHistory: Sendable, Equatable, Codable {
    public enum Outcome: String, Sendable, Codable { case committed, aborted }

    public var round: Int
    public var outcome: Outcome
    public var baseVersion: String
    /// The version the round committed (nil when aborted).
    public var version: String?
    public var selected: Int
    public var accepted: Int
    /// Training examples behind the aggregate (the accepted schools').
    public var examples: Int
    /// Example-weighted mean training loss of the accepted updates (nil without any).
    public var trainLoss: Double?
    public var bytesUp: Int
    public var bytesDown: Int
    /// Wall time of the whole round, seconds.
    public var seconds: Double
    /// Wall time per stage (`selecting`, `training`, `aggregating`, `committing`, `evaluating`), seconds.
    public var stageSeconds: [String: Double]
    /// Federated evaluation of the new version: example-weighted means over the schools that evaluated.
    public var evaluation: [String: Double]
    public var evaluationExamples: Int
    public var schools: [SchoolRound]

    public init(round: Int, outcome: Outcome, baseVersion: String, version: String?, selected: Int, accepted: Int, examples: Int,
                trainLoss: Double?, bytesUp: Int, bytesDown: Int, seconds: Double, stageSeconds: [String: Double],
                evaluation: [String: Double], evaluationExamples: Int, schools: [SchoolRound]) {
        self.round = round
        self.outcome = outcome
        self.baseVersion = baseVersion
        self.version = version
        self.selected = selected
        self.accepted = accepted
        self.examples = examples
        self.trainLoss = trainLoss
        self.bytesUp = bytesUp
        self.bytesDown = bytesDown
        self.seconds = seconds
        self.stageSeconds = stageSeconds
        self.evaluation = evaluation
        self.evaluationExamples = evaluationExamples
        self.schools = schools
    }
}

/// One school's part in a round: what it reported (counts and metrics) and whether its
/// update went into the aggregate, or the code of why not.
public struct SchoolRound: Sendable, Equatable, Codable {
    public var school: String
    public var selected: Bool
    public var accepted: Bool
    public var trainingExamples: Int?
    public var updateNorm: Double?
    /// The school's own training metrics (train_loss, steps, …).
    public var trainingMetrics: [String: Double]
    public var evaluationExamples: Int?
    public var evaluationMetrics: [String: Double]
    /// Why its update is not in the aggregate, as a reason code (`deadline`, `disconnected`,
    /// `rejected-norm`, …); the full reason is in the audit log.
    public var leftOut: String?

    public init(school: String, selected: Bool, accepted: Bool, trainingExamples: Int? = nil, updateNorm: Double? = nil,
                trainingMetrics: [String: Double] = [:], evaluationExamples: Int? = nil, evaluationMetrics: [String: Double] = [:],
                leftOut: String? = nil) {
        self.school = school
        self.selected = selected
        self.accepted = accepted
        self.trainingExamples = trainingExamples
        self.updateNorm = updateNorm
        self.trainingMetrics = trainingMetrics
        self.evaluationExamples = evaluationExamples
        self.evaluationMetrics = evaluationMetrics
        self.leftOut = leftOut
    }
}

/// The `v2-round-history` migration: one row per round (`roundHistory`) and one per school
/// and round (`roundSchools`). Metric maps are JSON objects of numbers.
func createRoundHistoryTables(_ db: Database) throws {
    try db.execute(sql: """
        CREATE TABLE roundHistory (round INTEGER PRIMARY KEY REFERENCES rounds(number), outcome TEXT NOT NULL,
            baseVersion TEXT NOT NULL, version TEXT, selected INTEGER NOT NULL, accepted INTEGER NOT NULL,
            examples INTEGER NOT NULL, trainLoss REAL, bytesUp INTEGER NOT NULL, bytesDown INTEGER NOT NULL,
            seconds REAL NOT NULL, stageSeconds TEXT NOT NULL, evaluation TEXT NOT NULL, evaluationExamples INTEGER NOT NULL,
            recordedAt TEXT NOT NULL);
        CREATE TABLE roundSchools (round INTEGER NOT NULL REFERENCES roundHistory(round), school TEXT NOT NULL,
            selected INTEGER NOT NULL, accepted INTEGER NOT NULL, trainingExamples INTEGER, updateNorm REAL,
            trainingMetrics TEXT NOT NULL, evaluationExamples INTEGER, evaluationMetrics TEXT NOT NULL, leftOut TEXT,
            PRIMARY KEY (round, school));
        """)
}

extension CoordinatorLedger {
    /// Stores (or replaces) round `history.round`'s figures. When the round committed a
    /// version, that version's metrics become the round's federated evaluation (versions are
    /// committed before the schools score them, so their metrics start empty).
    /// Non-finite numbers are left out: JSON and SQLite cannot carry them faithfully.
    public func recordHistory(_ history: RoundHistory) throws {
        guard !isReadOnly else { throw LedgerError("the ledger was opened read-only") }
        func numbers(_ m: [String: Double]) -> String {
            CanonicalJSON.object(m.filter { $0.value.isFinite }.mapValues { .double($0) }).description
        }
        func finite(_ v: Double?) -> Double? { v.flatMap { $0.isFinite ? $0 : nil } }
        try dbQueue.write { db in
            guard try Int.fetchOne(db, sql: "SELECT number FROM rounds WHERE number = ?", arguments: [history.round]) != nil else {
                throw LedgerError("no round \(history.round) to record history for")
            }
            try db.execute(sql: "DELETE FROM roundSchools WHERE round = ?", arguments: [history.round])
            try db.execute(sql: """
                INSERT OR REPLACE INTO roundHistory (round, outcome, baseVersion, version, selected, accepted, examples, trainLoss,
                    bytesUp, bytesDown, seconds, stageSeconds, evaluation, evaluationExamples, recordedAt)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [history.round, history.outcome.rawValue, history.baseVersion, history.version, history.selected,
                                 history.accepted, history.examples, finite(history.trainLoss), history.bytesUp, history.bytesDown,
                                 finite(history.seconds) ?? 0, numbers(history.stageSeconds), numbers(history.evaluation),
                                 history.evaluationExamples, AuditFormat.timestamp(Date())])
            for s in history.schools {
                try db.execute(sql: """
                    INSERT INTO roundSchools (round, school, selected, accepted, trainingExamples, updateNorm, trainingMetrics,
                        evaluationExamples, evaluationMetrics, leftOut) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [history.round, s.school, s.selected, s.accepted, s.trainingExamples, finite(s.updateNorm),
                                     numbers(s.trainingMetrics), s.evaluationExamples, numbers(s.evaluationMetrics), s.leftOut])
            }
            if history.outcome == .committed, let version = history.version, !history.evaluation.isEmpty {
                try db.execute(sql: "UPDATE versions SET metrics = ? WHERE id = ?", arguments: [numbers(history.evaluation), version])
            }
        }
    }

    /// Every round's stored figures, oldest first. A state folder opened read-only that was
    /// never migrated (made before round history) has none.
    public func history() throws -> [RoundHistory] {
        try dbQueue.read { db in
            guard try db.tableExists("roundHistory") else { return [] }
            var schools: [Int: [SchoolRound]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM roundSchools ORDER BY round, school") {
                schools[row["round"], default: []].append(SchoolRound(
                    school: row["school"], selected: row["selected"], accepted: row["accepted"],
                    trainingExamples: row["trainingExamples"], updateNorm: row["updateNorm"],
                    trainingMetrics: Self.numbers(row["trainingMetrics"]), evaluationExamples: row["evaluationExamples"],
                    evaluationMetrics: Self.numbers(row["evaluationMetrics"]), leftOut: row["leftOut"]))
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM roundHistory ORDER BY round").map { row in
                let round: Int = row["round"]
                return RoundHistory(
                    round: round, outcome: RoundHistory.Outcome(rawValue: row["outcome"]) ?? .aborted,
                    baseVersion: row["baseVersion"], version: row["version"], selected: row["selected"], accepted: row["accepted"],
                    examples: row["examples"], trainLoss: row["trainLoss"], bytesUp: row["bytesUp"], bytesDown: row["bytesDown"],
                    seconds: row["seconds"], stageSeconds: Self.numbers(row["stageSeconds"]), evaluation: Self.numbers(row["evaluation"]),
                    evaluationExamples: row["evaluationExamples"], schools: schools[round] ?? [])
            }
        }
    }

    /// The stored figures of the round that made `version`, if any.
    public func history(ofVersion version: String) throws -> RoundHistory? {
        try history().last { $0.version == version }
    }

    static func numbers(_ text: String?) -> [String: Double] {
        guard let text, let value = try? CanonicalJSON.parse(Data(text.utf8)) else { return [:] }
        return (value.objectValue ?? [:]).compactMapValues(\.doubleValue)
    }
}
