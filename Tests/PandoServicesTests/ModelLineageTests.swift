import Foundation
import Logging
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoWire
import XCTest

/// A school accepts only a version whose lineage it can follow (issue 17, item 14): the rule.
final class ModelLineageTests: XCTestCase {
    func digest(_ n: Int) -> ObjectDigest { ObjectDigest.of(Array("version-\(n)".utf8)) }
    func link(_ n: Int, parent: Int?, round: UInt64?) -> VersionLink {
        VersionLink(version: digest(n), parent: parent.map(digest), round: round)
    }
    /// Base 0 → 1 (round 1) → 2 (round 2).
    var chainTo2: VersionLineage { VersionLineage(chain: [link(2, parent: 1, round: 2), link(1, parent: 0, round: 1), link(0, parent: nil, round: nil)], initSeed: 42) }

    func testTheBaseGroundsAChainAndASeenVersionIsKnown() {
        var lineage = ModelLineage(records: [], federation: "f", trusted: nil)
        XCTAssertTrue(lineage.needsBase(chainTo2))
        XCTAssertEqual(lineage.judge(model: digest(2).hex, lineage: chainTo2, baseID: digest(0).hex),
                       .accept(chainTo2.chain, basis: "base"))
        guard case .decline(let code, let why) = lineage.judge(model: digest(2).hex, lineage: chainTo2, baseID: digest(9).hex) else {
            return XCTFail("a base that is not this school's is declined")
        }
        XCTAssertEqual(code, ModelLineage.Code.notBase)
        XCTAssertTrue(why.contains("seed 42"), why)
        lineage.add(chainTo2.chain)
        XCTAssertFalse(lineage.needsBase(chainTo2))
        XCTAssertEqual(lineage.judge(model: digest(2).hex, lineage: chainTo2, baseID: nil), .known)
        // A rollback: the head is an older version this school has seen.
        let back = VersionLineage(chain: [link(1, parent: 0, round: 1), link(0, parent: nil, round: nil)], initSeed: 42)
        XCTAssertEqual(lineage.judge(model: digest(1).hex, lineage: back, baseID: nil), .known)
        // A new version on top of a seen one needs no more than its link.
        let three = VersionLineage(chain: [link(3, parent: 2, round: 3)], initSeed: 42)
        XCTAssertEqual(lineage.judge(model: digest(3).hex, lineage: three, baseID: nil), .accept([three.chain[0]], basis: "seen"))
    }

    func testOutsideTheLineageIsDeclined() {
        var lineage = ModelLineage(records: [], federation: "f", trusted: nil)
        lineage.add(chainTo2.chain)
        func code(_ model: Int, _ l: VersionLineage?) -> WireToken? {
            if case .decline(let code, _) = lineage.judge(model: digest(model).hex, lineage: l, baseID: digest(0).hex) { return code }
            return nil
        }
        XCTAssertEqual(code(7, VersionLineage(chain: [link(7, parent: 6, round: 4)], initSeed: 42)), ModelLineage.Code.unknownParent)
        XCTAssertEqual(code(2, VersionLineage(chain: [link(2, parent: 0, round: 2)], initSeed: 42)), ModelLineage.Code.parentMismatch,
                       "version 2 was accepted as the child of 1")
        XCTAssertEqual(code(2, nil), ModelLineage.Code.missing)
        XCTAssertEqual(code(2, VersionLineage(chain: [link(3, parent: 2, round: 3)], initSeed: 42)), ModelLineage.Code.broken, "the chain starts elsewhere")
        XCTAssertEqual(code(8, VersionLineage(chain: [link(8, parent: 1, round: 1), link(1, parent: 0, round: 1)], initSeed: 42)), ModelLineage.Code.broken,
                       "a round not after its parent's")
        XCTAssertEqual(code(8, VersionLineage(chain: [link(8, parent: 5, round: 3), link(1, parent: 0, round: 1)], initSeed: 42)), ModelLineage.Code.broken,
                       "links that do not chain")
    }

    /// `federation.trust_version`, and the lineage read back from the school's log (only its federation's entries).
    func testTrustedVersionAndLineageFromTheLog() throws {
        let trusted = ModelLineage(records: [], federation: "f", trusted: digest(1).hex)
        let late = VersionLineage(chain: [link(2, parent: 1, round: 2), link(1, parent: 0, round: 1)], initSeed: 42)
        XCTAssertFalse(trusted.needsBase(late))
        XCTAssertEqual(trusted.judge(model: digest(2).hex, lineage: late, baseID: nil), .accept(late.chain, basis: "trusted"))

        func entry(_ n: Int, parent: Int?, round: Int?, federation: String) -> [String: CanonicalJSON] {
            var e: [String: CanonicalJSON] = ["event": "versionAccepted", "version": .string(digest(n).hex), "federation": .string(federation)]
            if let parent { e["parent"] = .string(digest(parent).hex) }
            if let round { e["versionRound"] = .int(round) }
            return e
        }
        let fromLog = ModelLineage(records: [entry(0, parent: nil, round: nil, federation: "f"), entry(1, parent: 0, round: 1, federation: "f"),
                                             entry(2, parent: 1, round: 2, federation: "other")], federation: "f", trusted: nil)
        XCTAssertEqual(Set(fromLog.accepted.keys), [digest(0).hex, digest(1).hex], "another federation's entries do not count")
        XCTAssertEqual(fromLog.judge(model: digest(2).hex, lineage: late, baseID: nil), .accept([late.chain[0]], basis: "seen"))
    }
}

/// The same over the real path: schools follow the lineage the coordinator states, decline a
/// model outside it (recorded in the coordinator's audit log and the school's own log), and
/// accept a rollback to a version they have seen.
extension EndToEndTests {
    func schoolLog(_ state: URL, _ school: String) throws -> [[String: Any]] {
        try String(contentsOf: state.appendingPathComponent("schools/\(school).jsonl"), encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    func auditRecords(_ state: URL) throws -> [AuditRecord] {
        try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records
    }

    /// Three schools on loopback over the tiny model, `rounds` rounds with a 30 s deadline.
    func lineageFederation(prefix: String, rounds: Int) throws -> (LoopbackFederation, work: URL, state: URL) {
        let work = try TestFixtures.temporaryDirectory(prefix: prefix)
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: rounds)
        config.rounds.roundDeadline = .seconds(30)
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"),
                                                logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
        return (federation, work, state)
    }

    /// West declines its round-1 assignment but its link drops before the answer arrives; the
    /// coordinator re-sends the same assignment when west reconnects, and west answers it the
    /// same way without logging a second decline (one assignment, one entry).
    func testARepeatedAssignmentIsDeclinedOnceInTheSchoolsLog() async throws {
        let (federation, _, state) = try lineageFederation(prefix: "pando-lineage-repeat", rounds: 1)
        let stranger = ObjectDigest.of(Array("a version no school has seen".utf8))
        federation.coordinator.alterAssignment = { school, a in
            if a.task == .train, school == "west" {
                a.lineage = VersionLineage(chain: [VersionLink(version: a.model.sha256, parent: stranger, round: 1)], initSeed: a.lineage!.initSeed)
            }
        }
        final class Count: @unchecked Sendable {
            let lock = NSLock()
            var value = 0
            /// Adds one; true the first time.
            func first() -> Bool { lock.withLock { value += 1; return value == 1 } }
        }
        let assignments = Count()
        federation.prepareAgent = { id, agent in
            guard id == "west" else { return }
            agent.onAssignment = { a, conn in
                if a.task == .train && assignments.first() { conn.close() }
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(assignments.lock.withLock { assignments.value }, 2, "west got its assignment twice")
        XCTAssertEqual(reports.first?.leftOut["west"], "the school reported declined: lineage-unknown-parent")
        let declines = try schoolLog(state, "west").filter { $0["event"] as? String == "assignmentDeclined" }
        XCTAssertEqual(declines.map { "\($0["round"]!) \($0["code"]!)" }, ["1 lineage-unknown-parent"])
    }

    func testAModelOutsideTheLineageIsDeclinedAndBothSidesRecordIt() async throws {
        let (federation, work, state) = try lineageFederation(prefix: "pando-lineage", rounds: 2)
        let stranger = ObjectDigest.of(Array("a version no school has seen".utf8))
        federation.coordinator.alterAssignment = { school, a in
            // Round 1: west is told the base model was made from a version it never saw.
            if a.round == 1, a.task == .train, school == "west" {
                a.lineage = VersionLineage(chain: [VersionLink(version: a.model.sha256, parent: stranger, round: 1)], initSeed: a.lineage!.initSeed)
            }
            // Round 2: every school is told round 1's version has another parent than it was told before.
            if a.round == 2, a.task == .train {
                a.lineage = VersionLineage(chain: [VersionLink(version: a.model.sha256, parent: stranger, round: 1),
                                                   VersionLink(version: stranger, parent: nil, round: nil)], initSeed: a.lineage!.initSeed)
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.count, 2)
        XCTAssertTrue(reports[0].committed)
        XCTAssertEqual(reports[0].accepted.sorted(), ["north", "south"])
        XCTAssertEqual(reports[0].leftOut["west"], "the school reported declined: lineage-unknown-parent")
        XCTAssertFalse(reports[1].committed, "no school trains on a version whose stated parent changed")
        let records = try auditRecords(state)
        let declined = records.filter { $0.event == .updateRejected && ($0.reason ?? "").contains("declined: lineage-") }
        XCTAssertEqual(declined.map { "\($0.round!) \($0.school!) \($0.reason!)" }.sorted(), [
            "1 west the school reported declined: lineage-unknown-parent",
            "2 north the school reported declined: lineage-parent-mismatch",
            "2 south the school reported declined: lineage-parent-mismatch",
            "2 west the school reported declined: lineage-parent-mismatch",
        ])
        let west = try schoolLog(state, "west")
        let westDeclines = west.filter { $0["event"] as? String == "assignmentDeclined" }
        XCTAssertEqual(westDeclines.map { "\($0["round"]!) \($0["code"]!)" }, ["1 lineage-unknown-parent", "2 lineage-parent-mismatch"])
        XCTAssertTrue((westDeclines[0]["reason"] as? String ?? "").contains("reaches no version this school has accepted"), "\(westDeclines[0])")
        XCTAssertFalse(west.contains { $0["event"] as? String == "updateSent" }, "west trained on nothing")
        let westCache = work.appendingPathComponent("run/schools/west/cache/versions")
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: westCache.path).contains(reports[0].baseVersion),
                       "west declined before fetching the version it was offered")
        // West evaluated round 1's version all the same: its lineage reaches the base model west rebuilt itself.
        let westVersions = west.filter { $0["event"] as? String == "versionAccepted" }
        XCTAssertEqual(westVersions.map { $0["basis"] as? String }, ["base", "base"])
        XCTAssertEqual(westVersions.last?["version"] as? String, reports[0].version)
        let north = try schoolLog(state, "north").filter { $0["event"] as? String == "versionAccepted" }
        XCTAssertEqual(north.map { $0["version"] as? String }, [reports[0].baseVersion, reports[0].version])
        XCTAssertEqual(north.map { $0["basis"] as? String }, ["base", "seen"])
        // The schools' lineage agrees with the signed log; declines are no problem for it.
        let verification = try verify(state)
        XCTAssertTrue(verification.isValid, verification.render())
    }

    func testARollbackToASeenVersionIsAcceptedAndAForeignOneNamedByVerify() async throws {
        let first = try await run(strategy: StrategyChoice(name: .fedavg), rounds: 2)
        XCTAssertTrue(first.reports.allSatisfy(\.committed))
        let v1 = first.reports[0].version
        let ledger = try CoordinatorLedger(folder: first.state)
        try ledger.rollback(to: v1, reason: "test: back to round 1")
        ledger.close()
        let second = try await run(strategy: StrategyChoice(name: .fedavg), rounds: 1, work: first.work)
        let report = try XCTUnwrap(second.reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.baseVersion, v1)
        XCTAssertEqual(report.accepted.sorted(), ["north", "south", "west"])
        for school in ["north", "south", "west"] {
            XCTAssertFalse(try schoolLog(first.state, school).contains { $0["event"] as? String == "assignmentDeclined" }, school)
        }
        XCTAssertTrue(try verify(first.state).isValid)

        // A version a school accepted that the coordinator's log never created is named.
        let north = try SchoolLog(url: first.work.appendingPathComponent("north-extra.jsonl"))
        var forged = SchoolLogEvent(.versionAccepted, school: "north", round: 4, task: "train", federation: "test-federation")
        forged.version = String(repeating: "ab", count: 32)
        forged.parent = v1
        forged.versionRound = 4
        forged.basis = "seen"
        try north.append(forged)
        let report2 = AuditVerifier.verify(log: first.state.appendingPathComponent("audit.jsonl"),
                                           key: try AuditPublicKey.load(from: first.state.appendingPathComponent("keys/coordinator.key.pub")),
                                           clientLogs: [north.url])
        XCTAssertTrue(report2.problems.contains { $0.file == "north-extra.jsonl" && $0.message.contains("the coordinator served a version it did not record") },
                      report2.render())
    }
}
