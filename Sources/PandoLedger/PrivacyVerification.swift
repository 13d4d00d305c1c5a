import Foundation

/// One DP-SGD spend as the audit records it: the accountant's inputs.
public struct RecordedSpend: Sendable, Equatable {
    public var samplingRate: Double
    public var noiseMultiplier: Double
    public var steps: Int
}

extension AuditVerifier {
    /// ε at δ of a sequence of spends, composed: the accountant `pando audit verify` uses
    /// (the RDP accountant of PandoTraining, passed in so the ledger needs no numerics).
    public typealias EpsilonOfSpends = @Sendable (_ spends: [RecordedSpend], _ delta: Double) -> Double?

    /// Recomputes every school's ε from the (q, σ, steps) its updates' records hold: each
    /// record's `epsilon` must be its own spend's ε, and its `epsilonTotal` the composition of
    /// all the school's spends in this log up to it, when the school counts as many (`spends`).
    /// A school that counts more spent in rounds whose updates never reached this log (a
    /// note); one that counts fewer, or any ε that does not recompute, is a problem.
    static func checkPrivacy(_ records: [AuditRecord], logName: String, epsilon: EpsilonOfSpends, report: inout VerificationReport) {
        var bySchool: [String: [RecordedSpend]] = [:]
        var seen: Set<String> = []
        var checked = 0
        func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 5e-4 * max(abs(a), abs(b), 1e-12) }
        for r in records where r.event == .updateReceived || r.event == .updateRejected {
            guard let p = r.privacy, let school = r.school else { continue }
            // The same update offered twice is one release.
            let key = "\(school)|\(r.round ?? -1)|\(r.updateSHA256 ?? "")"
            guard seen.insert(key).inserted else { continue }
            guard let q = p["samplingRate"]?.doubleValue, let sigma = p["noiseMultiplier"]?.doubleValue,
                  let steps = p["steps"]?.intValue, let delta = p["delta"]?.doubleValue,
                  let e = p["epsilon"]?.doubleValue, let total = p["epsilonTotal"]?.doubleValue, let count = p["spends"]?.intValue else {
                report.problem(logName, r.line, "\(school)'s privacy record lacks a field the accountant needs")
                continue
            }
            let spend = RecordedSpend(samplingRate: q, noiseMultiplier: sigma, steps: steps)
            bySchool[school, default: []].append(spend)
            let own = bySchool[school]!
            checked += 1
            guard let mine = epsilon([spend], delta) else {
                report.problem(logName, r.line, "\(school): the accountant refuses q = \(q), σ = \(sigma), \(steps) steps")
                continue
            }
            if !close(mine, e) {
                report.problem(logName, r.line, "\(school), round \(r.round ?? -1): ε of this round recomputes to \(mine), the school reported \(e)")
            }
            if count == own.count {
                if let all = epsilon(own, delta), !close(all, total) {
                    report.problem(logName, r.line, "\(school), round \(r.round ?? -1): ε over its \(count) rounds recomputes to \(all), the school reported \(total)")
                }
            } else if count > own.count {
                report.note(logName, r.line, "\(school) counts \(count) rounds spent in, \(count - own.count) of them not in this log (updates that never arrived, or rounds before its first record here): its ε \(total) is above what this log alone recomputes")
            } else {
                report.problem(logName, r.line, "\(school) counts \(count) rounds spent in, but this log already holds \(own.count) of its DP updates: its reported ε \(total) understates what it spent")
            }
        }
        report.privacyRecordsChecked = checked
    }
}
