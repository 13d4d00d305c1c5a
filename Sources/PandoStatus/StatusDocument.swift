import Foundation
import PandoLedger
import PandoServices

/// What `GET /api/v1/status` returns and the status page shows: the federation, its
/// schools, the round in progress, past rounds, versions and the audit head. Identifiers and
/// numbers only. The schema is `deploy/status-api.openapi.yaml` (`StatusDocument`).
public struct StatusDocument: Codable, Sendable, Equatable {
    public struct Federation: Codable, Sendable, Equatable {
        public var id: String
        public var task: String
        public var labels: [String]
        /// When the state folder's federation was created (nil before the coordinator opens it).
        public var createdAt: String?
        public var headVersion: String?
        /// The schools' mutual-TLS port while the coordinator listens.
        public var port: Int?
        public var roundsPlanned: Int
    }

    public struct School: Codable, Sendable, Equatable {
        public var id: String
        public var connected: Bool
        public var lastSeen: String?
        public var activity: String?
        /// Fraction (0…1) of the school's current activity, from its heartbeats.
        public var progress: Double?
        public var heartbeats: Int
        public var roundsSelected: Int
        /// Rounds whose aggregate has this school's update.
        public var roundsAccepted: Int
        public var roundsEvaluated: Int
        /// Reason code → number of rounds the school was left out of for it.
        public var leftOut: [String: Int]
    }

    public struct ActiveRound: Codable, Sendable, Equatable {
        /// Nil while waiting for schools (the round is not recorded yet).
        public var round: Int?
        public var stage: String
        public var startedAt: String
        public var stageSeconds: Double
        public var selected: [String]
        public var accepted: Int
        /// School → reason code.
        public var leftOut: [String: String]
    }

    public struct Version: Codable, Sendable, Equatable {
        public var id: String
        public var sequence: Int
        public var parent: String?
        public var round: Int?
        public var createdAt: String
        public var head: Bool
        public var pruned: Bool
        public var metrics: [String: Double]
    }

    public struct Audit: Codable, Sendable, Equatable {
        public var records: Int
        public var lastHash: String?
    }

    public var generatedAt: String
    public var federation: Federation
    public var schools: [School]
    public var round: ActiveRound?
    public var rounds: [RoundHistory]
    public var versions: [Version]
    public var audit: Audit
}

extension StatusDocument {
    /// The document as the coordinator stands now: live state from `monitor`, history,
    /// versions and audit head from its open ledger (empty before it is open).
    static func build(configuration: CoordinatorConfiguration, monitor: CoordinatorMonitor, now: Date = Date()) throws -> StatusDocument {
        let ledger = monitor.ledger
        let info = try ledger?.federation()
        let history = try ledger?.history() ?? []
        let head = info?.headVersion
        let versions = try ledger?.versions() ?? []
        let audit = try ledger?.auditHead()
        let live = monitor.schools()

        var ids = Set(live.map(\.school))
        for h in history { ids.formUnion(h.schools.map(\.school)) }
        for s in (try ledger?.schools()) ?? [] { ids.insert(s.id) }
        let liveByID = Dictionary(live.map { ($0.school, $0) }, uniquingKeysWith: { a, _ in a })
        let schools = ids.sorted().map { id -> School in
            let rounds = history.compactMap { $0.schools.first { $0.school == id } }
            var leftOut: [String: Int] = [:]
            for r in rounds { if let code = r.leftOut { leftOut[code, default: 0] += 1 } }
            let l = liveByID[id]
            return School(id: id, connected: l?.connected ?? false, lastSeen: l?.lastSeen.map(Self.timestamp), activity: l?.connected == true ? l?.activity : nil,
                          progress: l?.connected == true ? l?.progress : nil, heartbeats: Int(clamping: l?.heartbeats ?? 0),
                          roundsSelected: rounds.filter(\.selected).count, roundsAccepted: rounds.filter(\.accepted).count,
                          roundsEvaluated: rounds.filter { $0.evaluationExamples != nil }.count, leftOut: leftOut)
        }
        let active = monitor.activeRound().map {
            ActiveRound(round: $0.round, stage: $0.stage.rawValue, startedAt: Self.timestamp($0.startedAt),
                        stageSeconds: max(0, now.timeIntervalSince($0.stageStartedAt)), selected: $0.selected, accepted: $0.accepted,
                        leftOut: $0.leftOut)
        }
        return StatusDocument(
            generatedAt: Self.timestamp(now),
            federation: Federation(id: info?.id ?? configuration.federationID, task: info?.task ?? configuration.task.rawValue,
                                   labels: configuration.labels, createdAt: info?.createdAt, headVersion: head, port: monitor.port,
                                   roundsPlanned: configuration.rounds.rounds),
            schools: schools, round: active, rounds: history,
            versions: versions.map {
                Version(id: $0.id, sequence: $0.sequence, parent: $0.parent, round: $0.round, createdAt: $0.createdAt, head: $0.id == head,
                        pruned: $0.prunedAt != nil, metrics: $0.metrics.filter { $0.value.isFinite })
            },
            audit: Audit(records: audit?.count ?? 0, lastHash: audit?.lastHash))
    }

    static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: date)
    }

    /// JSON with sorted keys; non-finite numbers were left out when the document was built.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try encoder.encode(self)
    }

    /// Metric names with a value in some round's federated evaluation, headline metrics first.
    var plottedMetrics: [String] {
        let all = Set(rounds.flatMap { $0.evaluation.keys })
        let preferred = ["accuracy", "macro_f1", "micro_f1", "qwk", "pearson", "rmse", "loss"]
        return (preferred.filter(all.contains) + all.subtracting(preferred).sorted()).filter(StatusPage.isIdentifier)
    }

    /// `metric` per round, index = round number (0 = base model, which has no federated evaluation): NaN where absent.
    func series(_ metric: String) -> [Double] {
        let last = rounds.map(\.round).max() ?? 0
        var values = [Double](repeating: .nan, count: last + 1)
        for r in rounds where r.outcome == .committed { values[r.round] = r.evaluation[metric] ?? .nan }
        return values
    }
}
