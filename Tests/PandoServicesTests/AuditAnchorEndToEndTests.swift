import Foundation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// The audit log anchored at the schools (issue 17, item 4), over the real path: every
/// assignment carries the coordinator's audit head and each school logs it; a copy of the
/// log the operator re-signs with the coordinator's own key verifies on its own but not
/// against the schools' logs.
extension EndToEndTests {
    func testSchoolsAnchorTheAuditLogAndARewriteIsCaught() async throws {
        let r = try await run(strategy: StrategyChoice(name: .fedavg), rounds: 2)
        XCTAssertTrue(r.reports.allSatisfy(\.committed))
        let intact = try verify(r.state)
        XCTAssertTrue(intact.isValid, intact.render())
        // Three schools, two rounds, a train and an evaluate assignment each; a school that
        // reconnects mid-round is sent its assignment again and logs that anchor too.
        XCTAssertGreaterThanOrEqual(intact.anchorsChecked, 3 * 2 * 2, "every assignment's audit head is anchored and checked")
        for school in ["north", "south", "west"] {
            let anchors = try SchoolLog(url: r.state.appendingPathComponent("schools/\(school).jsonl")).records()
                .filter { $0["event"]?.stringValue == "anchorSeen" }.map { "\($0["round"]?.intValue ?? -1)/\($0["task"]?.stringValue ?? "")" }
            XCTAssertEqual(Set(anchors), ["1/train", "1/evaluate", "2/train", "2/evaluate"], school)
        }
        let schoolLogs = try FileManager.default.contentsOfDirectory(atPath: r.state.appendingPathComponent("schools").path)
            .filter { $0.hasSuffix(".jsonl") }.map { r.state.appendingPathComponent("schools/\($0)") }
        let key = try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: r.state))
        let objects = try AuditRecord.readAll(r.state.appendingPathComponent("audit.jsonl")).records.map(\.object)

        func resigned(_ name: String, _ edit: ([[String: CanonicalJSON]]) -> [[String: CanonicalJSON]]) throws -> URL {
            let copy = r.work.appendingPathComponent(name)
            try AuditFormat.resealed(edit(objects), key: key).write(to: copy)
            return copy
        }
        // Round 2 dropped.
        let dropped = try resigned("dropped.jsonl") { $0.filter { $0["round"]?.intValue != 2 } }
        XCTAssertTrue(AuditVerifier.verify(log: dropped, key: key.publicKey).isValid, "on its own, the re-signed log verifies")
        let droppedReport = AuditVerifier.verify(log: dropped, key: key.publicKey, clientLogs: schoolLogs)
        for school in ["north", "south", "west"] {
            XCTAssertTrue(droppedReport.problems.contains { $0.file == "\(school).jsonl" && $0.message.contains("round 2 (") && $0.message.contains("audit head") },
                          droppedReport.render())
        }
        // An extra school credited in round 1's commit.
        let credited = try resigned("credited.jsonl") { objects in
            objects.map { o in
                guard o["event"]?.stringValue == "roundCommitted", o["round"]?.intValue == 1, var by = o["examplesBySchool"]?.objectValue else { return o }
                var o = o
                by["east"] = .int(75)
                o["examplesBySchool"] = .object(by)
                o["examples"] = .int((o["examples"]?.intValue ?? 0) + 75)
                return o
            }
        }
        let creditedReport = AuditVerifier.verify(log: credited, key: key.publicKey, clientLogs: schoolLogs)
        XCTAssertTrue(creditedReport.problems.contains { $0.file == "credited.jsonl" && $0.message.contains("credits school east with 75 examples") },
                      creditedReport.render())
        XCTAssertTrue(creditedReport.problems.contains { $0.file == "west.jsonl" && $0.message.contains("round 1 (evaluate)") && $0.message.contains("rewritten") },
                      creditedReport.render())
    }
}
