import Foundation
import NIOConcurrencyHelpers
import PandoLedger

/// What a running coordinator is doing, for whoever watches it (the status page and JSON
/// API, Prometheus metrics): the round in progress by stage, the schools' live sessions and
/// what their heartbeats report, and an event for every stage and round that ends.
/// Identifiers and numbers only. The round driver writes it; readers take snapshots.
public final class CoordinatorMonitor: @unchecked Sendable {
    /// Where a round stands.
    public enum Stage: String, Sendable, CaseIterable {
        /// Waiting until `selection.min_schools` are connected.
        case waiting
        /// Choosing schools and recording the round.
        case selecting
        /// Assignments out; updates coming in.
        case training
        /// Folding the last updates and applying the strategy.
        case aggregating
        /// Writing the new version and its records.
        case committing
        /// Schools scoring the new version (federated evaluation).
        case evaluating
    }

    /// One school's live session as the coordinator sees it.
    public struct LiveSchool: Sendable, Equatable {
        public var school: String
        public var connected: Bool
        /// Last heartbeat, or connection change when no heartbeat came yet.
        public var lastSeen: Date?
        /// What the last heartbeat said: idle, training, evaluating, transferring.
        public var activity: String?
        /// Fraction of that activity done (0…1), when the school reports it.
        public var progress: Double?
        public var heartbeats: UInt64
        public init(school: String, connected: Bool, lastSeen: Date?, activity: String?, progress: Double?, heartbeats: UInt64) {
            self.school = school
            self.connected = connected
            self.lastSeen = lastSeen
            self.activity = activity
            self.progress = progress
            self.heartbeats = heartbeats
        }
    }

    /// The round in progress.
    public struct ActiveRound: Sendable, Equatable {
        public var round: Int?
        public var stage: Stage
        public var startedAt: Date
        public var stageStartedAt: Date
        public var selected: [String]
        /// Updates accepted so far.
        public var accepted: Int
        /// School → reason code of why it is left out so far.
        public var leftOut: [String: String]
    }

    /// What ended, for metrics.
    public enum Event: Sendable {
        /// A stage of a round ended after `seconds`.
        case stageEnded(Stage, seconds: Double)
        /// A round ended (committed or aborted) with its stored figures.
        case roundEnded(RoundHistory)
    }

    private let lock = NIOLock()
    private var active: ActiveRound?
    private var stageSeconds: [String: Double] = [:]
    private var observers: [@Sendable (Event) -> Void] = []
    private var lastSeen: [String: Date] = [:]
    private var sessions: (@Sendable () -> [LiveSchool])?
    private var openLedger: CoordinatorLedger?
    private var listeningPort: Int?

    public init() {}

    /// Adds `handler` for every event from now on (called on the round driver's task: keep it short).
    public func observe(_ handler: @escaping @Sendable (Event) -> Void) {
        lock.withLock { observers.append(handler) }
    }

    /// The coordinator's ledger while `run` has it open (reads only; nil before and after).
    public var ledger: CoordinatorLedger? { lock.withLock { openLedger } }

    /// The schools' mutual-TLS port while the coordinator listens.
    public var port: Int? { lock.withLock { listeningPort } }

    /// Every school with a live session, and those seen earlier in this process (disconnected).
    public func schools() -> [LiveSchool] {
        let (live, seen) = lock.withLock { (sessions, lastSeen) }
        var byID: [String: LiveSchool] = [:]
        for (school, at) in seen { byID[school] = LiveSchool(school: school, connected: false, lastSeen: at, activity: nil, progress: nil, heartbeats: 0) }
        for s in live?() ?? [] {
            var s = s
            if s.lastSeen == nil { s.lastSeen = seen[s.school] }
            byID[s.school] = s
        }
        return byID.values.sorted { $0.school < $1.school }
    }

    /// The round in progress (nil between rounds and before the first), with the stage's elapsed time.
    public func activeRound() -> ActiveRound? { lock.withLock { active } }

    // MARK: written by the coordinator

    func attach(ledger: CoordinatorLedger, port: Int, sessions: @escaping @Sendable () -> [LiveSchool]) {
        lock.withLock {
            openLedger = ledger
            listeningPort = port
            self.sessions = sessions
        }
    }

    func detach() {
        lock.withLock {
            openLedger = nil
            listeningPort = nil
            sessions = nil
            active = nil
        }
    }

    /// A school connected or disconnected now.
    func sessionChanged(_ school: String) {
        lock.withLock { lastSeen[school] = Date() }
    }

    /// The round driver moved to `stage` (of `round`, once the round is recorded). The stage
    /// it leaves is timed; `waiting` starts a new round's clock.
    func enter(_ stage: Stage, round: Int? = nil, selected: [String]? = nil) {
        let now = Date()
        let ended: (Stage, Double)? = lock.withLock {
            if active == nil || stage == .waiting && active?.stage != .waiting {
                let previous = active
                active = ActiveRound(round: round, stage: stage, startedAt: now, stageStartedAt: now, selected: [], accepted: 0, leftOut: [:])
                stageSeconds = [:]
                return previous.map { ($0.stage, now.timeIntervalSince($0.stageStartedAt)) }
            }
            guard var a = active else { return nil }
            let seconds = now.timeIntervalSince(a.stageStartedAt)
            let left = a.stage
            if left != stage { stageSeconds[left.rawValue, default: 0] += seconds }
            a.stage = stage
            a.stageStartedAt = now
            if let round { a.round = round }
            if let selected { a.selected = selected }
            active = a
            return left == stage ? nil : (left, seconds)
        }
        if let (stage, seconds) = ended { emit(.stageEnded(stage, seconds: seconds)) }
    }

    /// An update was accepted into the open round's aggregate.
    func accepted() { lock.withLock { active?.accepted += 1 } }

    /// `school` is left out of the open round, for `reason` (its code is kept).
    func leftOut(_ school: String, reason: String) {
        lock.withLock { active?.leftOut[school] = LeftOutReason.code(reason) }
    }

    /// The open round ended; returns the seconds each stage took (the last one included).
    func endRound() -> [String: Double] {
        let now = Date()
        let (ended, seconds): ((Stage, Double)?, [String: Double]) = lock.withLock {
            guard let a = active else { return (nil, stageSeconds) }
            let s = now.timeIntervalSince(a.stageStartedAt)
            stageSeconds[a.stage.rawValue, default: 0] += s
            active = nil
            defer { stageSeconds = [:] }
            return ((a.stage, s), stageSeconds)
        }
        if let (stage, s) = ended { emit(.stageEnded(stage, seconds: s)) }
        return seconds
    }

    func emit(_ event: Event) {
        for observer in lock.withLock({ observers }) { observer(event) }
    }
}

/// Codes for why a school's update is not in a round's aggregate: the status page, the API
/// and the metrics' `reason` label show these (a small fixed set); the audit log keeps the
/// full sentence.
public enum LeftOutReason {
    /// Every code `code(_:)` returns.
    public static let codes = [
        "deadline", "disconnected", "unreachable", "revoked", "declined", "no-update", "replay", "implausible-count",
        "impossible-metric", "unreadable", "rejected-round", "rejected-base", "rejected-examples", "rejected-shape",
        "rejected-nonfinite", "rejected-norm", "rejected-duplicate", "stopped", "other",
    ]

    /// The code of a reason sentence the round driver wrote.
    public static func code(_ reason: String) -> String {
        let table: [(String, String)] = [
            ("missed the round deadline", "deadline"), ("before the assignment", "unreachable"), ("disconnected", "disconnected"),
            ("could not be sent", "unreachable"),
            ("certificate is no longer valid", "revoked"), ("the school reported", "declined"), ("names no stored update", "no-update"),
            ("replay:", "replay"), ("examples, over the limit", "implausible-count"), ("impossible metric", "impossible-metric"),
            ("could not be read", "unreadable"), ("late or replayed", "rejected-round"), ("trained from version", "rejected-base"),
            ("training examples; at least", "rejected-examples"), ("lacks tensor", "rejected-shape"), ("has tensor", "rejected-shape"),
            ("tensor order", "rejected-shape"), ("has shape", "rejected-shape"), ("NaN", "rejected-nonfinite"),
            ("infinite", "rejected-nonfinite"), ("norm", "rejected-norm"), ("already sent an update", "rejected-duplicate"),
            ("coordinator was stopped", "stopped"),
        ]
        return table.first { reason.contains($0.0) }?.1 ?? "other"
    }
}
