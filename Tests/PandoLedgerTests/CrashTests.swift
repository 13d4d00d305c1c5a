import Foundation
import PandoTestSupport
import XCTest
@testable import PandoLedger

/// SIGKILL during commits: a child process (this test binary, re-run with
/// `PANDO_LEDGER_CRASH_DIR` set, selecting `CrashChild.testCommitForever`)
/// runs rounds in a loop; the parent kills it at varying moments, reopens the
/// state and checks it is consistent and the audit trail verifies.
final class CrashChild: LedgerTestCase {
    func testCommitForever() throws {
        guard let dir = ProcessInfo.processInfo.environment["PANDO_LEDGER_CRASH_DIR"] else {
            throw XCTSkip("the entry point of SigkillTests' child process")
        }
        let ledger = try Fixture.ledger(at: URL(fileURLWithPath: dir))
        var i = Float(Int.random(in: 1..<100_000) * 10)
        while true {
            i += 1
            try Fixture.round(ledger, value: i)
            if Int(i) % 3 == 0 { try ledger.prune(keepLast: 2) }
        }
    }
}

final class SigkillTests: LedgerTestCase {
    func testKilledDuringCommitsRecoversAndVerifies() throws {
        let binary = try ChildProcesses.testBinary()
        let folder = Fixture.folder()
        // Create the federation first so the key exists for verification.
        try Fixture.ledger(at: folder).close()
        let key = try pub(folder)
        var lastHeadRounds = 0
        let audit = folder.appendingPathComponent("audit.jsonl")
        func auditBytes() -> Int { ((try? FileManager.default.attributesOfItem(atPath: audit.path))?[.size] as? Int) ?? 0 }
        // Delays count from the moment the child has visibly committed work (its
        // audit lines grew), so a slow start on a loaded machine cannot make the
        // kill land before the child did anything.
        for (attempt, delay) in [0.05, 0.3, 0.0, 0.5, 0.15].enumerated() {
            let before = auditBytes()
            let child = try ChildProcesses.start(binary, test: "PandoLedgerTests.CrashChild/testCommitForever",
                                                 environment: ["PANDO_LEDGER_CRASH_DIR": folder.path])
            let started = Date()
            while auditBytes() < before + 4096, Date().timeIntervalSince(started) < 60 { Thread.sleep(forTimeInterval: 0.01) }
            XCTAssertGreaterThanOrEqual(auditBytes(), before + 4096, "attempt \(attempt): the child committed within a minute")
            Thread.sleep(forTimeInterval: delay)
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            XCTAssertEqual(child.terminationReason, .uncaughtSignal, "attempt \(attempt): the child must have been killed, not have failed")

            let ledger = try CoordinatorLedger(folder: folder)
            XCTAssertNil(try ledger.roundInFlight(), "attempt \(attempt)")
            let head = try XCTUnwrap(ledger.head())
            XCTAssertTrue(ledger.store.hasWeights(head.id))
            XCTAssertEqual(try Digest.sha256(fileAt: ledger.store.weights(of: head.id)), head.id)
            let committed = try ledger.rounds().filter { $0.status == .committed }
            XCTAssertEqual(committed.last?.newVersion, head.id, "attempt \(attempt): head is the last committed version")
            XCTAssertGreaterThanOrEqual(committed.count, lastHeadRounds, "no committed round lost")
            lastHeadRounds = committed.count
            XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: ledger.store.folder.path).contains { $0.hasPrefix(".") })
            let report = AuditVerifier.verify(log: ledger.auditURL, key: key, checkpoints: folder)
            XCTAssertTrue(report.isValid, "attempt \(attempt):\n" + report.render())
            // The federation goes on.
            let v = try Fixture.round(ledger, value: 1000 + Float(attempt))
            XCTAssertEqual(v.parent, head.id)
            ledger.close()
        }
        // Before the last check the parent had committed 4 rounds; the rest are the child's.
        XCTAssertGreaterThan(lastHeadRounds - 4, 0, "the child committed rounds before being killed")
    }
}
