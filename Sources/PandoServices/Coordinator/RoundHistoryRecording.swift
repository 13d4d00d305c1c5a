import Foundation
import NIOCore
import PandoLedger
import PandoTransport
import PandoWire

extension Coordinator {
    /// The live sessions with what their heartbeats last reported, for the monitor.
    static func liveSchools(hub: SessionHub, server: CoordinatorServer) -> @Sendable () -> [CoordinatorMonitor.LiveSchool] {
        { [hub, server] in
            let now = NIODeadline.now()
            return hub.connectedSchools.map { school in
                let status = WireToken(school).flatMap { server.status(of: $0) }
                let seen = status?.lastHeartbeat.map { Date(timeIntervalSinceNow: -Double((now - $0).nanoseconds) / 1e9) }
                return CoordinatorMonitor.LiveSchool(school: school, connected: true, lastSeen: seen, activity: status?.activity.rawValue,
                                                     progress: status?.progress.flatMap { $0.isFinite ? min(max($0, 0), 1) : nil },
                                                     heartbeats: status?.heartbeatsReceived ?? 0)
            }
        }
    }
}

extension RoundDriver {
    /// Stores what `report`'s round did in the ledger (numbers and identifiers only) and tells
    /// the monitor the round ended. The history is operational, not audited: failing to
    /// store it is logged and does not fail a committed round.
    func recordHistory(_ report: FederatedRoundReport) {
        let stages = coordinator.monitor.endRound()
        var schools: [String: SchoolRound] = report.schoolFigures
        for school in report.selected {
            schools[school, default: SchoolRound(school: school, selected: true, accepted: false)].selected = true
        }
        for (school, reason) in report.leftOut {
            schools[school, default: SchoolRound(school: school, selected: true, accepted: false)].leftOut = LeftOutReason.code(reason)
        }
        for school in report.accepted { schools[school]?.accepted = true }
        let history = RoundHistory(
            round: report.round, outcome: report.committed ? .committed : .aborted, baseVersion: report.baseVersion,
            version: report.committed ? report.version : nil, selected: report.selected.count, accepted: report.accepted.count,
            examples: report.examples, trainLoss: report.trainLoss.isFinite ? report.trainLoss : nil,
            bytesUp: Int(clamping: report.bytesUp), bytesDown: Int(clamping: report.bytesDown), seconds: report.seconds,
            stageSeconds: stages, evaluation: report.evaluation, evaluationExamples: report.evaluationExamples,
            schools: schools.values.sorted { $0.school < $1.school })
        store(history)
    }

    /// The history of a round that ended with an error or a stop (recorded as aborted).
    func recordAborted(round: Int, base: String, selected: [String], reason: String, start: ContinuousClock.Instant) {
        let stages = coordinator.monitor.endRound()
        let code = LeftOutReason.code(reason)
        let history = RoundHistory(
            round: round, outcome: .aborted, baseVersion: base, version: nil, selected: selected.count, accepted: 0, examples: 0,
            trainLoss: nil, bytesUp: 0, bytesDown: 0, seconds: Self.seconds(since: start), stageSeconds: stages, evaluation: [:],
            evaluationExamples: 0, schools: selected.map { SchoolRound(school: $0, selected: true, accepted: false, leftOut: code) })
        store(history)
    }

    private func store(_ history: RoundHistory) {
        do { try ledger.ledger.recordHistory(history) } catch {
            logger.error("round \(history.round): its history could not be stored: \(error)")
        }
        coordinator.monitor.emit(.roundEnded(history))
    }
}
