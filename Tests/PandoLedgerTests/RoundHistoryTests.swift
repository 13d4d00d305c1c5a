import Foundation
import GRDB
import XCTest
@testable import PandoLedger

final class RoundHistoryTests: LedgerTestCase {
    func history(round: Int, version: String?, base: String) -> RoundHistory {
        RoundHistory(round: round, outcome: version == nil ? .aborted : .committed, baseVersion: base, version: version,
                     selected: 3, accepted: 2, examples: 201, trainLoss: 0.42, bytesUp: 4096, bytesDown: 8192, seconds: 12.5,
                     stageSeconds: ["training": 10, "aggregating": 0.5, "evaluating": 2],
                     evaluation: ["accuracy": 0.75, "macro_f1": 0.7, "loss": .nan], evaluationExamples: 60,
                     schools: [
                        SchoolRound(school: "north-high", selected: true, accepted: true, trainingExamples: 100, updateNorm: 1.5,
                                    trainingMetrics: ["train_loss": 0.4, "steps": 7], evaluationExamples: 20,
                                    evaluationMetrics: ["accuracy": 0.8]),
                        SchoolRound(school: "south-middle", selected: true, accepted: true, trainingExamples: 101, updateNorm: 2.5,
                                    trainingMetrics: ["train_loss": 0.44], evaluationExamples: 40, evaluationMetrics: ["accuracy": 0.725]),
                        SchoolRound(school: "west-elementary", selected: true, accepted: false, leftOut: "deadline"),
                     ])
    }

    func testHistoryIsStoredAndBecomesTheVersionsMetrics() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let v = try Fixture.round(ledger, value: 0.25)
        let base = try XCTUnwrap(v.parent)
        let stored = history(round: 1, version: v.id, base: base)
        try ledger.recordHistory(stored)
        var expected = stored
        expected.evaluation["loss"] = nil  // NaN is not stored
        XCTAssertEqual(try ledger.history(), [expected])
        XCTAssertEqual(try ledger.history(ofVersion: v.id), expected)
        XCTAssertEqual(try ledger.version(v.id).metrics, ["accuracy": 0.75, "macro_f1": 0.7])
        // Recording a round again replaces it (school rows included).
        var again = stored
        again.schools.removeLast()
        try ledger.recordHistory(again)
        XCTAssertEqual(try ledger.history().first?.schools.map(\.school), ["north-high", "south-middle"])
        // A read-only open sees the same.
        ledger.close()
        let reader = try CoordinatorLedger(folder: folder, readOnly: true)
        XCTAssertEqual(try reader.history().count, 1)
        XCTAssertThrowsError(try reader.recordHistory(stored))
        XCTAssertThrowsError(try Fixture.ledger(at: Fixture.folder()).recordHistory(history(round: 9, version: nil, base: base))) {
            XCTAssertTrue("\($0)".contains("no round 9"), "\($0)")
        }
    }

    /// A state folder from before round history (schema v1 only) reads as having none, and its
    /// next writable open migrates it without touching what it holds.
    func testStateFolderWithoutHistoryTablesIsMigrated() throws {
        let folder = Fixture.folder()
        var ledger: CoordinatorLedger? = try Fixture.ledger(at: folder)
        let v = try Fixture.round(ledger!, value: 0.5)
        let audit = try ledger!.auditHead()
        ledger!.close()
        ledger = nil
        // Make it what an older Pando left: no v2 tables, no v2 migration recorded.
        let db = try DatabaseQueue(path: folder.appendingPathComponent("state.sqlite").path)
        try db.write { db in
            try db.execute(sql: "DROP TABLE roundSchools; DROP TABLE roundHistory; DELETE FROM grdb_migrations WHERE identifier = 'v2-round-history'")
        }
        try db.close()
        let old = try CoordinatorLedger(folder: folder, readOnly: true)
        XCTAssertEqual(try old.history(), [], "an unmigrated folder has no history, and reading it is no error")

        let reopened = try CoordinatorLedger(folder: folder)
        XCTAssertEqual(try reopened.history(), [])
        XCTAssertEqual(try reopened.head()?.id, v.id)
        XCTAssertEqual(try reopened.auditHead().count, audit.count, "migrating writes no audit record")
        try reopened.recordHistory(history(round: 1, version: v.id, base: try XCTUnwrap(v.parent)))
        XCTAssertEqual(try reopened.history().map(\.round), [1])
        XCTAssertEqual(try reopened.history().first?.schools.first { $0.school == "west-elementary" }?.leftOut, "deadline")
    }
}
