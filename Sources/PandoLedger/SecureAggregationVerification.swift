import Foundation

extension AuditVerifier {
    /// Each `secureAggregation` record is consistent with itself and with the round's other
    /// records: the stages only shrink (roster ⊇ advertised ⊇ shared ⊇ contributors), every
    /// advertising school has a key hash, 2 ≤ t ≤ n, the contributors hold at least
    /// `minimumSurvivors`, every school that left is given a stage, and the schools whose
    /// updates the round accepted (`updateReceived`) are exactly the contributors, none of whom
    /// is also recorded as left out.
    static func checkSecureAggregation(_ records: [AuditRecord], logName: String, report: inout VerificationReport) {
        for r in records where r.event == .secureAggregation {
            guard let round = r.round, let s = r.secureAggregation else {
                report.problem(logName, r.line, "secureAggregation record without round or secureAggregation fields")
                continue
            }
            func list(_ k: String) -> [String] { s[k]?.arrayValue?.compactMap(\.stringValue) ?? [] }
            let roster = Set(list("roster")), advertised = Set(list("advertised")), shared = Set(list("shared"))
            let contributors = Set(list("contributors"))
            let keys = s["keys"]?.objectValue ?? [:]
            let dropped = s["dropped"]?.objectValue ?? [:]
            let t = s["threshold"]?.intValue ?? 0, n = roster.count
            let here = "round \(round)'s secure aggregation"
            if !(advertised.isSubset(of: roster) && shared.isSubset(of: advertised) && contributors.isSubset(of: shared)) {
                report.problem(logName, r.line, "\(here): its stages do not nest (roster ⊇ advertised ⊇ shared ⊇ contributors)")
            }
            if !(2...max(2, n)).contains(t) || t > n { report.problem(logName, r.line, "\(here): threshold \(t) is outside 2…\(n)") }
            for school in advertised.sorted() where keys[school]?.stringValue.map(Digest.isSHA256) != true {
                report.problem(logName, r.line, "\(here): no key hash for \(school), which advertised keys")
            }
            for school in roster.subtracting(contributors).sorted() where dropped[school] == nil {
                report.problem(logName, r.line, "\(here): \(school) is on the roster but neither contributed nor is recorded as dropped")
            }
            if s["outcome"]?.stringValue == "unmasked" {
                if let m = s["minimumSurvivors"]?.intValue, contributors.count < m {
                    report.problem(logName, r.line, "\(here): unmasked the sum of \(contributors.count) schools, below its minimum of \(m)")
                }
                let received = Set(records.filter { $0.event == .updateReceived && $0.round == round }.compactMap(\.school))
                if received != contributors {
                    report.problem(logName, r.line, "\(here): contributors \(contributors.sorted()) but round \(round) accepted updates from \(received.sorted())")
                }
                // A contributor's input is in the sum: it cannot also have been left out.
                for x in records where x.event == .updateRejected && x.round == round {
                    if let school = x.school, contributors.contains(school) {
                        report.problem(logName, x.line, "\(here): \(school) is recorded as left out, but its input is in the unmasked sum")
                    }
                }
            }
        }
    }

    /// A school's logged key hash for a secure round matches what the coordinator recorded it advertised.
    static func checkSecureKeys(_ e: ClientEntry, where_: String, _ records: [AuditRecord], report: inout VerificationReport) {
        guard let mine = e.keysSHA256 else { return }
        guard let r = records.first(where: { $0.event == .secureAggregation && $0.round == e.round }) else {
            report.problem(e.file, e.line, "\(where_): the school masked its update, but the coordinator's log has no secure-aggregation record of round \(e.round)")
            return
        }
        let recorded = r.secureAggregation?["keys"]?.objectValue?[e.school]?.stringValue
        if recorded != mine {
            report.problem(e.file, e.line, "\(where_): the school advertised keys \(mine.prefix(12)); the coordinator's log line \(r.line) records \(recorded?.prefix(12) ?? "none") for it")
        }
    }
}
