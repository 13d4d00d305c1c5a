import Foundation
import XCTest
@testable import PandoLedger

final class CheckpointStoreTests: LedgerTestCase {
    func testVersionIdIsSHA256OfWeightsFile() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let v = try Fixture.round(ledger, value: 0.25)
        let bytes = try Data(contentsOf: ledger.store.weights(of: v.id))
        XCTAssertEqual(v.id, Digest.sha256(bytes))
        XCTAssertEqual(v.parent, try ledger.versions().first?.id)
        XCTAssertEqual(v.round, 1)
        XCTAssertEqual(v.strategy, "fedavg")
        XCTAssertEqual(v.metrics["accuracy"], 0.5)
        XCTAssertEqual(try ledger.head()?.id, v.id)
    }

    func testWriterThatFailsHalfWayLeavesNothingVisible() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let before = ledger.store.storedIDs()
        let head = try ledger.head()?.id
        struct Boom: Error {}
        XCTAssertThrowsError(try ledger.store.stage { dir in
            let handle = FileManager.default.createFile(atPath: dir.appendingPathComponent("model.safetensors").path, contents: Data(repeating: 7, count: 1000))
            XCTAssertTrue(handle)
            throw Boom()  // half way
        })
        XCTAssertEqual(ledger.store.storedIDs(), before)
        let names = try FileManager.default.contentsOfDirectory(atPath: ledger.store.folder.path)
        XCTAssertEqual(names.sorted(), before, "no staging or temp folder is left visible: \(names)")
        XCTAssertEqual(try ledger.head()?.id, head)
        // A failure after the weights are installed but before the transaction removes them again.
        let round = try ledger.startRound(strategy: "fedavg")
        let staged = try ledger.store.stage { try Fixture.writeModel([9, 9, 9, 9], to: $0) }
        ledger.failpoint = { if $0 == "commit.afterInstall" { throw Boom() } }
        XCTAssertThrowsError(try ledger.commitRound(round.number, version: staged, examplesBySchool: [:]))
        XCTAssertEqual(ledger.store.storedIDs(), before)
        XCTAssertEqual(try ledger.head()?.id, head)
    }

    func testDiffExportRollbackTag() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let base = try ledger.head()!
        let v1 = try Fixture.round(ledger, value: 3)
        let diff = try CheckpointStore.diff(ledger.store.weights(of: base.id), ledger.store.weights(of: v1.id))
        let w = try XCTUnwrap(diff.first { $0.name == "bert.weight" })
        // base [0,0,0,0] → [3,6,0,1]: L2 = sqrt(9+36+1), max abs 6
        XCTAssertEqual(w.l2!, (46.0).squareRoot(), accuracy: 1e-9)
        XCTAssertEqual(w.maxAbs, 6)

        let out = Fixture.folder().appendingPathComponent("export")
        try ledger.store.export(v1.id, to: out)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: out.path)), ["config.json", "model.safetensors", "vocab.txt"])
        XCTAssertEqual(try Digest.sha256(fileAt: out.appendingPathComponent("model.safetensors")), v1.id)

        try ledger.tag(base.id, as: "pilot")
        XCTAssertEqual(try ledger.version("pilot").id, base.id)
        // A hex-looking tag would shadow id-prefix lookups.
        XCTAssertThrowsError(try ledger.tag(base.id, as: String(v1.id.prefix(6))))
        XCTAssertEqual(try ledger.version(String(v1.id.prefix(8))).id, v1.id)
        try ledger.rollback(to: "pilot", reason: "v1 regressed")
        XCTAssertEqual(try ledger.head()?.id, base.id)
        XCTAssertEqual(try ledger.versions().count, 2, "rollback never deletes history")
        XCTAssertEqual(try ledger.headHistory().map(\.cause), ["created", "round 1", "rollback"])
        let records = try AuditRecord.readAll(ledger.auditURL).records
        XCTAssertEqual(records.last?.event, .rollback)
        XCTAssertEqual(records.last?.baseVersion, v1.id)
        // The next round builds on the rolled-back head.
        let v2 = try Fixture.round(ledger, value: 5)
        XCTAssertEqual(v2.parent, base.id)
    }

    func testRetentionKeepsLineageVerifiable() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let base = try ledger.head()!
        try ledger.tag(base.id, as: "release-1")
        var made = [VersionRecord]()
        for i in 1...4 { made.append(try Fixture.round(ledger, value: Float(i))) }
        let pruned = try ledger.prune(keepLast: 2)
        XCTAssertEqual(Set(pruned), Set([made[0].id, made[1].id]))
        XCTAssertTrue(ledger.store.hasWeights(base.id), "tagged version kept")
        XCTAssertTrue(ledger.store.hasWeights(made[3].id))
        XCTAssertFalse(ledger.store.hasWeights(made[0].id))
        XCTAssertEqual(try ledger.versions().count, 5, "records stay")
        XCTAssertNotNil(try ledger.version(made[0].id).prunedAt)
        XCTAssertThrowsError(try ledger.rollback(to: made[0].id))
        XCTAssertThrowsError(try ledger.store.export(made[0].id, to: Fixture.folder().appendingPathComponent("x")))
        let report = AuditVerifier.verify(log: ledger.auditURL, key: try pub(folder), checkpoints: folder)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.notes.filter { $0.message.hasPrefix("pruned") }.count, 2, report.render())
        // A pruned file that disappears is fine; an unpruned one that disappears is not.
        try FileManager.default.removeItem(at: ledger.store.folder(of: made[2].id))
        let broken = AuditVerifier.verify(log: ledger.auditURL, key: try pub(folder), checkpoints: folder)
        XCTAssertFalse(broken.isValid)
        XCTAssertTrue(broken.problems.contains { $0.message.contains("weights missing") && $0.file.contains(made[2].id.prefix(12)) }, broken.render())
    }
}

func pub(_ folder: URL) throws -> AuditPublicKey {
    try AuditPublicKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder).appendingPathExtension("pub"))
}

final class DurabilityTests: LedgerTestCase {
    struct Injected: Error {}

    func testVersionRoundAndAuditCommitTogether() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        for point in ["commit.afterVersionInsert", "commit.beforeAudit"] {
            let round = try ledger.roundInFlight() ?? ledger.startRound(strategy: "fedavg")
            let auditBefore = try Data(contentsOf: ledger.auditURL)
            let versionsBefore = try ledger.versions()
            let staged = try ledger.store.stage { try Fixture.writeModel([1, 2, 3, 4], to: $0) }
            ledger.failpoint = { if $0 == point { throw Injected() } }
            XCTAssertThrowsError(try ledger.commitRound(round.number, version: staged, examplesBySchool: ["a": 1]))
            ledger.failpoint = nil
            XCTAssertEqual(try ledger.versions(), versionsBefore, point)
            XCTAssertEqual(try ledger.round(round.number).status, .inFlight, point)
            XCTAssertEqual(try Data(contentsOf: ledger.auditURL), auditBefore, point)
            XCTAssertEqual(try ledger.auditHead().count, try AuditRecord.readAll(ledger.auditURL).records.count)
            XCTAssertFalse(ledger.store.hasWeights(staged.id), "uncommitted weights are removed")
        }
        let round = try ledger.roundInFlight()!
        let staged = try ledger.store.stage { try Fixture.writeModel([1, 2, 3, 4], to: $0) }
        try ledger.record(AuditEntry(event: .updateReceived, round: round.number, school: "a", examples: 1, updateSHA256: Digest.zero))
        let v = try ledger.commitRound(round.number, version: staged, examplesBySchool: ["a": 1])
        XCTAssertEqual(try ledger.head()?.id, v.id)
        XCTAssertEqual(try ledger.round(round.number).status, .committed)
        XCTAssertTrue(AuditVerifier.verify(log: ledger.auditURL, key: try pub(folder), checkpoints: folder).isValid)
    }

    func testReopenMarksInFlightRoundAbortedAndAudits() throws {
        let folder = Fixture.folder()
        var ledger: CoordinatorLedger? = try Fixture.ledger(at: folder)
        let v1 = try Fixture.round(ledger!, value: 1)
        let r2 = try ledger!.startRound(strategy: "fedprox", parameters: ["mu": 0.01])
        try ledger!.record(AuditEntry(event: .schoolSelected, round: r2.number, school: "north-high"))
        XCTAssertThrowsError(try CoordinatorLedger(folder: folder), "a second writer is refused while the first holds the lock")
        ledger = nil  // "crash": no abort recorded
        let reopened = try CoordinatorLedger(folder: folder)
        XCTAssertEqual(reopened.recovery.abortedRounds, [r2.number])
        XCTAssertEqual(try reopened.round(r2.number).status, .aborted)
        XCTAssertEqual(try reopened.head()?.id, v1.id)
        let last = try XCTUnwrap(AuditRecord.readAll(reopened.auditURL).records.last)
        XCTAssertEqual(last.event, .roundAborted)
        XCTAssertEqual(last.round, r2.number)
        XCTAssertTrue(AuditVerifier.verify(log: reopened.auditURL, key: try pub(folder), checkpoints: folder).isValid)
        let v3 = try Fixture.round(reopened, value: 2)
        XCTAssertEqual(v3.parent, v1.id, "the federation goes on from the last committed version")
        XCTAssertEqual(v3.round, 3)
    }

    func testAuditFileRestoredAfterCrashBetweenCommitAndAppend() throws {
        let folder = Fixture.folder()
        var ledger: CoordinatorLedger? = try Fixture.ledger(at: folder)
        ledger!.failpoint = { if $0 == "audit.beforeFileAppend" { throw Injected() } }
        let v = try Fixture.round(ledger!, value: 1)  // committed; file not appended
        let fileCount = try Fixture.lines(ledger!.auditURL).count
        XCTAssertLessThan(fileCount, try ledger!.auditHead().count)
        ledger = nil
        // Also a torn last line, as a crash mid-append leaves.
        let auditURL = folder.appendingPathComponent("audit.jsonl")
        let handle = try FileHandle(forWritingTo: auditURL)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"event":"roundSt"#.utf8))
        try handle.close()
        let reopened = try CoordinatorLedger(folder: folder)
        XCTAssertTrue(reopened.recovery.partialAuditLineRemoved)
        XCTAssertGreaterThan(reopened.recovery.auditRecordsRestored, 0)
        XCTAssertEqual(try Fixture.lines(auditURL).count, try reopened.auditHead().count)
        XCTAssertEqual(try reopened.head()?.id, v.id)
        let report = AuditVerifier.verify(log: auditURL, key: try pub(folder), checkpoints: folder)
        XCTAssertTrue(report.isValid, report.render())
    }

    func testSigningKeyFileIsPrivate() throws {
        let folder = Fixture.folder()
        let url = folder.appendingPathComponent("k/coordinator.key")
        let key = CoordinatorSigningKey()
        try key.save(to: url)
        let mode = try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as! NSNumber
        XCTAssertEqual(mode.intValue & 0o777, 0o600)
        XCTAssertEqual(try CoordinatorSigningKey.load(from: url).publicKey, key.publicKey)
        XCTAssertEqual(try AuditPublicKey.load(from: url.appendingPathExtension("pub")), key.publicKey)
        XCTAssertFalse(key.description.contains(key.privateKey.rawRepresentation.base64EncodedString()))
        chmod(url.path, 0o644)
        XCTAssertThrowsError(try CoordinatorSigningKey.load(from: url))
    }

    /// A state folder whose signing key went missing is not signed on with a fresh key
    /// (issue 17): opening it fails, naming the key and the way out; `newSigningKey` (the
    /// coordinator's --new-signing-key) creates one. A new state creates its key unasked.
    func testMissingSigningKeyIsOnlyReplacedWhenAsked() throws {
        let fresh = try CoordinatorLedger(folder: Fixture.folder())
        XCTAssertTrue(fresh.signingKeyCreated, "a new state creates its key")
        fresh.close()
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        try Fixture.round(ledger, value: 1)
        let oldKey = try pub(folder)
        ledger.close()
        let keyURL = CoordinatorLedger.defaultKeyURL(in: folder)
        try FileManager.default.removeItem(at: keyURL)
        XCTAssertThrowsError(try CoordinatorLedger(folder: folder)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(keyURL.path) && text.contains("missing") && text.contains("--new-signing-key"), text)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: keyURL.path), "no key was made")
        let replaced = try CoordinatorLedger(folder: folder, newSigningKey: true)
        XCTAssertTrue(replaced.signingKeyCreated)
        XCTAssertNotEqual(try pub(folder), oldKey, "the new public key is beside it")
        replaced.close()
        XCTAssertFalse(try CoordinatorLedger(folder: folder).signingKeyCreated, "once there, the key is just loaded")
    }
}

final class CanonicalJSONTests: LedgerTestCase {
    func testRoundTripAndEscapes() throws {
        let value: CanonicalJSON = .object(["b": .string("é\n\"\\\u{01}😀"), "a": .int(-3), "c": .double(1e-5), "d": .array([.null, .bool(true)]),
                                            "n": .double(.nan), "x": .double(2.0)])
        let bytes = value.encoded
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self),
                       #"{"a":-3,"b":"é\n\"\\\u0001😀","c":1e-05,"d":[null,true],"n":"NaN","x":2}"#)
        XCTAssertEqual(try CanonicalJSON.parse(bytes).encoded, bytes)
        XCTAssertEqual(try CanonicalJSON.parse(Data(#" { "x" : 1.50 } "#.utf8)).encoded, Data(#"{"x":1.50}"#.utf8), "numbers keep their text")
        XCTAssertThrowsError(try CanonicalJSON.parse(Data(#"{"a":1,"a":2}"#.utf8)))
    }
}
