import Foundation
import PandoTestSupport
import XCTest
@testable import PandoLedger

final class AuditTamperTests: LedgerTestCase {
    /// A state folder with three rounds; returns (folder, log lines, public key).
    func makeLog() throws -> (URL, URL, [Data], AuditPublicKey) {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        for i in 1...3 { try Fixture.round(ledger, value: Float(i)) }
        try ledger.record(AuditEntry(event: .certificateRevoked, school: "south-middle", certificateSerial: "0a1b", reason: "laptop stolen"))
        let url = ledger.auditURL
        ledger.close()
        return (folder, url, try Fixture.lines(url), try pub(folder))
    }

    /// Verifies a tampered copy of the log (without the database, so only the chain speaks).
    func verifyCopy(_ lines: [Data], key: AuditPublicKey, rawTail: Data? = nil) throws -> VerificationReport {
        let url = Fixture.folder().appendingPathComponent("audit.jsonl")
        try Fixture.writeLines(lines, to: url)
        if let rawTail {
            let h = try FileHandle(forWritingTo: url); try h.seekToEnd(); try h.write(contentsOf: rawTail); try h.close()
        }
        return AuditVerifier.verify(log: url, key: key)
    }

    func testIntactLogVerifies() throws {
        let (folder, url, lines, key) = try makeLog()
        let report = AuditVerifier.verify(log: url, key: key, checkpoints: folder)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.validSignatures, lines.count)
        XCTAssertEqual(report.versionFilesChecked, 4)
    }

    func testOneChangedByteIsNamed() throws {
        let (_, _, lines, key) = try makeLog()
        var tampered = lines
        let text = String(decoding: tampered[5], as: UTF8.self)
        XCTAssertTrue(text.contains("\"examples\":101"))
        tampered[5] = Data(text.replacingOccurrences(of: "\"examples\":101", with: "\"examples\":901").utf8)  // one byte
        let report = try verifyCopy(tampered, key: key)
        XCTAssertFalse(report.isValid)
        XCTAssertTrue(report.problems.contains { $0.line == 6 && $0.message.contains("signature does not verify") }, report.render())
        XCTAssertTrue(report.problems.contains { $0.line == 7 && $0.message.contains("prev does not match") }, report.render())
    }

    func testDroppedLineIsNamed() throws {
        let (_, _, lines, key) = try makeLog()
        var tampered = lines
        tampered.remove(at: 3)
        let report = try verifyCopy(tampered, key: key)
        XCTAssertTrue(report.problems.contains { $0.line == 4 && $0.message.contains("seq is 5, expected 4") }, report.render())
        XCTAssertTrue(report.problems.contains { $0.line == 4 && $0.message.contains("prev does not match") }, report.render())
    }

    func testReorderedLinesAreNamed() throws {
        let (_, _, lines, key) = try makeLog()
        var tampered = lines
        tampered.swapAt(2, 3)
        let report = try verifyCopy(tampered, key: key)
        XCTAssertTrue(report.problems.contains { $0.line == 3 && $0.message.contains("seq is 4, expected 3") }, report.render())
        XCTAssertFalse(report.problems.contains { $0.message.contains("signature") }, "each record is still genuinely signed")
    }

    func testForgedSignatureWithAnotherKeyIsNamed() throws {
        let (_, _, lines, key) = try makeLog()
        // Re-seal record 4 with a different key, keeping seq and prev correct.
        let original = try AuditRecord(line: 4, bytes: lines[3])
        var object = original.object
        object.removeValue(forKey: "signature")
        object["school"] = "forged-school"
        let signed = CanonicalJSON.object(object).encoded
        object["signature"] = .string(try CoordinatorSigningKey().sign(signed).base64EncodedString())
        var tampered = lines
        tampered[3] = CanonicalJSON.object(object).encoded
        let report = try verifyCopy(tampered, key: key)
        XCTAssertTrue(report.problems.contains { $0.line == 4 && $0.message.contains("signature does not verify") }, report.render())
        // The whole log checked against the wrong key fails on every line.
        let wrong = try verifyCopy(lines, key: CoordinatorSigningKey().publicKey)
        XCTAssertEqual(wrong.problems.count, lines.count)
    }

    func testTruncationAndTornLine() throws {
        let (folder, url, lines, key) = try makeLog()
        // Dropping the last records is visible against the coordinator's database.
        try Fixture.writeLines(Array(lines.dropLast(2)), to: url)
        let cut = AuditVerifier.verify(log: url, key: key, checkpoints: folder)
        XCTAssertTrue(cut.problems.contains { $0.message.contains("records were removed from the end") }, cut.render())
        let torn = try verifyCopy(lines, key: key, rawTail: Data(#"{"event":"#.utf8))
        XCTAssertTrue(torn.problems.contains { $0.line == lines.count + 1 && $0.message.contains("incomplete") }, torn.render())
    }

    func testCheckpointByteChangeIsNamed() throws {
        let (folder, url, _, key) = try makeLog()
        let ledger = try CoordinatorLedger(folder: folder, readOnly: true)
        let victim = try ledger.versions()[2].id
        let file = ledger.store.weights(of: victim)
        var bytes = [UInt8](try Data(contentsOf: file))
        bytes[bytes.count - 1] ^= 0x01
        try Data(bytes).write(to: file)
        let report = AuditVerifier.verify(log: url, key: key, checkpoints: folder)
        XCTAssertTrue(report.problems.contains { $0.file == "versions/\(victim)/model.safetensors" && $0.message.contains("not the version id") }, report.render())
        // And a changed config.json is caught through the recorded file hashes.
        try Data("{}".utf8).write(to: ledger.store.folder(of: victim).appendingPathComponent("config.json"))
        XCTAssertTrue(AuditVerifier.verify(log: url, key: key, checkpoints: folder).problems.contains { $0.file.hasSuffix("config.json") })
    }
}

final class SchoolLogCrossCheckTests: LedgerTestCase {
    func testBothDirections() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let north = try SchoolLog(url: folder.appendingPathComponent("school-north.jsonl"))
        let south = try SchoolLog(url: folder.appendingPathComponent("school-south.jsonl"))
        for i in 1...2 { try Fixture.round(ledger, value: Float(i), schoolLogs: ["north-high": north, "south-middle": south]) }
        let key = try pub(folder)
        let ok = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [north.url, south.url])
        XCTAssertTrue(ok.isValid, ok.render())
        XCTAssertEqual(ok.clientEntriesChecked, 4)

        // School → coordinator: the school claims an update the coordinator never logged.
        try north.append(SchoolLogEntry(school: "north-high", round: 2, baseVersion: "x", updateSHA256: String(repeating: "ab", count: 32), wireBytes: 10, examples: 5))
        let claimed = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [north.url, south.url])
        XCTAssertTrue(claimed.problems.contains { $0.file == "school-north.jsonl" && $0.line == 3 && $0.message.contains("different update") }, claimed.render())

        // Coordinator → school: the coordinator logs an update the school never sent.
        try ledger.record(AuditEntry(event: .updateReceived, round: 2, school: "south-middle", examples: 1, updateSHA256: String(repeating: "cd", count: 32)))
        let extra = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [south.url])
        let line = try Fixture.lines(ledger.auditURL).count
        XCTAssertTrue(extra.problems.contains { $0.file == "audit.jsonl" && $0.line == line && $0.message.contains("not in the school's own log") }, extra.render())

        // A school log whose line was edited is caught by its own chain.
        var lines = try Fixture.lines(south.url)
        lines[0] = Data(String(decoding: lines[0], as: UTF8.self).replacingOccurrences(of: "\"examples\":101", with: "\"examples\":901").utf8)
        try Fixture.writeLines(lines, to: south.url)
        let edited = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [south.url])
        XCTAssertTrue(edited.problems.contains { $0.file == "school-south.jsonl" && $0.line == 2 && $0.message.contains("prev does not match") }, edited.render())
        XCTAssertTrue(edited.problems.contains { $0.file == "school-south.jsonl" && $0.line == 1 && $0.message.contains("examples") }, edited.render())
    }
}

final class SchoolLogFederationTests: LedgerTestCase {
    /// Each entry names its federation (issue 17): one logged for another federation is a
    /// problem; entries of older logs, which lack the field, still verify.
    func testEntriesNameTheirFederation() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let north = try SchoolLog(url: folder.appendingPathComponent("school-north.jsonl"))
        try Fixture.round(ledger, value: 1, schoolLogs: ["north-high": north])
        try Fixture.round(ledger, value: 2, schoolLogs: ["north-high": north], federation: "district-7")
        let key = try pub(folder)
        let lines = try Fixture.lines(north.url).map { String(decoding: $0, as: UTF8.self) }
        XCTAssertFalse(lines[0].contains("federation"), "an entry as older versions wrote it")
        XCTAssertTrue(lines[1].contains(#""federation":"district-7""#), lines[1])
        let ok = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [north.url])
        XCTAssertTrue(ok.isValid, ok.render())
        try Fixture.round(ledger, value: 3, schoolLogs: ["north-high": north], federation: "district-8")
        let other = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [north.url])
        XCTAssertTrue(other.problems.contains { $0.line == 3 && $0.message.contains("logged for federation district-8")
            && $0.message.contains("federation district-7") }, other.render())
    }
}

final class CanaryTests: LedgerTestCase {
    /// A school's data holds a unique string; the records built from its
    /// update (hashes, counts, norms) must never contain it, in any file of
    /// the coordinator's state folder or the school's own log.
    func testCanaryNeverReachesAnyStoredByte() throws {
        let canary = "CANARY-\(UUID().uuidString)"
        let schoolData = ["text,label", "\(canary) I love maths,positive", "homework is \(canary),negative"].joined(separator: "\n")
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let log = try SchoolLog(url: folder.appendingPathComponent("client/sent.jsonl"))
        // A fake "update" derived from the data (stand-in for a trained delta).
        let values = schoolData.utf8.prefix(64).map { Float($0) / 255 }
        let update = Fixture.safetensors([("delta", values)])
        let round = try ledger.startRound(strategy: "fedavg", parameters: ["serverLearningRate": 1])
        try ledger.record(AuditEntry(event: .schoolSelected, round: round.number, school: "north-high"))
        let norm = values.reduce(0) { $0 + Double($1 * $1) }.squareRoot()
        try ledger.record(AuditEntry(event: .updateReceived, round: round.number, school: "north-high", baseVersion: round.baseVersion,
                                     examples: 2, updateSHA256: Digest.sha256(update), updateL2Norm: norm, wireBytes: update.count,
                                     privacy: ["epsilon": 3, "delta": 1e-5, "noiseMultiplier": 1.1]))
        try log.append(SchoolLogEntry(school: "north-high", round: round.number, baseVersion: round.baseVersion,
                                      updateSHA256: Digest.sha256(update), wireBytes: update.count, examples: 2))
        let staged = try ledger.store.stage { try Fixture.writeModel(Array(values.prefix(4)), to: $0) }
        try ledger.commitRound(round.number, version: staged, examplesBySchool: ["north-high": 2])
        ledger.close()
        let needle = Data(canary.utf8)
        let files = Fixture.allFiles(folder)
        XCTAssertGreaterThan(files.count, 8)
        for file in files {
            let bytes = try Data(contentsOf: file)
            XCTAssertNil(bytes.range(of: needle), "canary found in \(file.path)")
        }
    }
}

final class OneSidedUpdateTests: LedgerTestCase {
    /// An update only the school's log holds is a problem, unless the coordinator recorded
    /// why it never used it: the school was left out of that round (a rejection with no
    /// hash), or the round was aborted. Then it is a note naming the reason.
    func testExplainedGapsAreNotesAndUnexplainedOnesProblems() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let west = try SchoolLog(url: folder.appendingPathComponent("school-west.jsonl"))
        try Fixture.round(ledger, value: 1)
        let key = try pub(folder)
        let sha = String(repeating: "ef", count: 32)
        // Round 1 is committed and says nothing of west: its claim is unexplained.
        try west.append(SchoolLogEntry(school: "west", round: 1, baseVersion: "x", updateSHA256: sha, wireBytes: 10, examples: 5))
        var report = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [west.url])
        XCTAssertTrue(report.problems.contains { $0.file == "school-west.jsonl" && $0.line == 1 && $0.message.contains("not in the coordinator's log") }, report.render())

        // Round 2: the coordinator left west out (it disconnected) and the round committed.
        let round = try ledger.startRound(strategy: "fedavg")
        try ledger.record(AuditEntry(event: .updateRejected, round: round.number, school: "west", reason: "disconnected during the round"))
        let staged = try ledger.store.stage { try Fixture.writeModel([2, 4, 0, 1], to: $0) }
        try ledger.commitRound(round.number, version: staged, examplesBySchool: [:])
        let west2 = try SchoolLog(url: folder.appendingPathComponent("school-west2.jsonl"))
        try west2.append(SchoolLogEntry(school: "west", round: round.number, baseVersion: "x", updateSHA256: sha, wireBytes: 10, examples: 5))
        report = AuditVerifier.verify(log: ledger.auditURL, key: key, clientLogs: [west2.url])
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertTrue(report.notes.contains { $0.message.contains("never stored") && $0.message.contains("disconnected during the round") }, report.render())
    }
}


/// A lost signing key replaced with --new-signing-key (issue 17, reviewer's note): the open
/// that creates the key writes a `signingKeyReplaced` record naming the new public key's
/// hash, signed by it; verify accepts the log given both keys, in either order, and names
/// what is missing otherwise. A record before the replacement signed with the new key (the
/// new key's holder rewriting history) is refused.
final class SigningKeyReplacementTests: LedgerTestCase {
    func testALogSpanningAKeyReplacementVerifiesWithBothKeys() throws {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        for i in 1...2 { try Fixture.round(ledger, value: Float(i)) }
        let oldKey = try pub(folder)
        let before = try Fixture.lines(ledger.auditURL).count
        ledger.close()
        try FileManager.default.removeItem(at: CoordinatorLedger.defaultKeyURL(in: folder))
        let replaced = try CoordinatorLedger(folder: folder, newSigningKey: true)
        XCTAssertTrue(replaced.signingKeyReplaced)
        try Fixture.round(replaced, value: 3)
        let url = replaced.auditURL
        replaced.close()
        let newKey = try pub(folder)
        let lines = try Fixture.lines(url)
        let record = try AuditRecord(line: before + 1, bytes: lines[before])
        XCTAssertEqual(record.event, .signingKeyReplaced)
        XCTAssertEqual(record.publicKeySHA256, newKey.sha256)
        XCTAssertFalse(try CoordinatorLedger(folder: folder).signingKeyReplaced, "a later open with the key records nothing")

        for keys in [[oldKey, newKey], [newKey, oldKey]] {
            let report = AuditVerifier.verify(log: url, keys: keys, checkpoints: folder)
            XCTAssertTrue(report.isValid, report.render())
            XCTAssertEqual(report.validSignatures, lines.count)
        }
        let onlyOld = AuditVerifier.verify(log: url, keys: [oldKey])
        XCTAssertTrue(onlyOld.problems.contains { $0.line == before + 1 && $0.message.contains("none of the keys given")
            && $0.message.contains(String(newKey.sha256.prefix(16))) }, onlyOld.render())
        XCTAssertTrue(onlyOld.problems.contains { $0.message.contains("\(lines.count - before) record(s) from here on") }, onlyOld.render())
        let onlyNew = AuditVerifier.verify(log: url, keys: [newKey])
        XCTAssertTrue(onlyNew.problems.contains { $0.line == 1 && $0.message.contains("signature does not verify") }, onlyNew.render())

        // The new key's holder re-signs a record from before the replacement.
        let tamperedLine = 3
        var object = try AuditRecord(line: tamperedLine, bytes: lines[tamperedLine - 1]).object
        object.removeValue(forKey: "signature")
        let signed = CanonicalJSON.object(object).encoded
        let newSigner = try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder))
        object["signature"] = .string(try newSigner.sign(signed).base64EncodedString())
        var tampered = lines
        tampered[tamperedLine - 1] = CanonicalJSON.object(object).encoded
        let copy = Fixture.folder().appendingPathComponent("audit.jsonl")
        try Fixture.writeLines(tampered, to: copy)
        let forged = AuditVerifier.verify(log: copy, keys: [oldKey, newKey])
        XCTAssertTrue(forged.problems.contains { $0.line == tamperedLine && $0.message.contains("signed by key \(newKey.fingerprint), but key \(oldKey.fingerprint) is in use") },
                      forged.render())

        // The independent Python checker (docs/verify_audit.py) agrees.
        let keys = Fixture.folder()
        try oldKey.save(to: keys.appendingPathComponent("old.pub"))
        try newKey.save(to: keys.appendingPathComponent("new.pub"))
        let (old, new) = (keys.appendingPathComponent("old.pub").path, keys.appendingPathComponent("new.pub").path)
        let both = try PythonChecker.run([url.path, old, new])
        XCTAssertEqual(both.status, 0, both.output)
        XCTAssertTrue(both.output.contains("VERIFIED"), both.output)
        XCTAssertEqual(try PythonChecker.run([url.path, old]).status, 1, "the replacement names a key not given")
        XCTAssertEqual(try PythonChecker.run([copy.path, old, new]).status, 1, "a record before the replacement signed by the new key")
    }
}

/// The audit log anchored outside the coordinator (issue 17, item 4). An operator holding the
/// signing key can re-sign a rewritten log that verifies on its own; the audit heads the
/// schools logged from their assignments, an officer's `--since`, and the cross-check of each
/// commit's credits against the updates it accepted are what catch it.
final class AuditAnchorTests: LedgerTestCase {
    let schools = ["north-high", "south-middle"]

    /// Three rounds; both schools log their updates and the audit heads they were sent.
    func makeFederation() throws -> (folder: URL, log: URL, schoolLogs: [URL], key: CoordinatorSigningKey) {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        let logs = Dictionary(uniqueKeysWithValues: schools.map { ($0, try! SchoolLog(url: folder.appendingPathComponent("school-\($0).jsonl"))) })
        for i in 1...3 { try Fixture.round(ledger, value: Float(i), schoolLogs: logs, federation: "district-7", anchors: true) }
        let url = ledger.auditURL
        ledger.close()
        let key = try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder))
        return (folder, url, schools.map { logs[$0]!.url }, key)
    }

    /// A copy of the log's records, changed by `edit` and re-signed with the real key.
    func resigned(_ log: URL, key: CoordinatorSigningKey, _ edit: ([[String: CanonicalJSON]]) -> [[String: CanonicalJSON]]) throws -> URL {
        let objects = try Fixture.lines(log).map { try AuditRecord(line: 0, bytes: $0).object }
        let copy = Fixture.folder().appendingPathComponent("audit.jsonl")
        try AuditFormat.resealed(edit(objects), key: key).write(to: copy)
        return copy
    }

    func testAnchorsOfAnIntactLogVerify() throws {
        let f = try makeFederation()
        let report = AuditVerifier.verify(log: f.log, key: f.key.publicKey, clientLogs: f.schoolLogs)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.anchorsChecked, 2 * 3 * 2, "two schools, three rounds, a train and an evaluate assignment each")
        XCTAssertTrue(report.render().contains("next time: --since \(report.head!)"), report.render())
    }

    func testALogResignedWithRoundTwoDroppedFailsAgainstTheSchoolLogs() throws {
        let f = try makeFederation()
        let copy = try resigned(f.log, key: f.key) { $0.filter { $0["round"]?.intValue != 2 } }
        let alone = AuditVerifier.verify(log: copy, key: f.key.publicKey)
        XCTAssertTrue(alone.isValid, "re-signed with the real key, the log verifies on its own: \(alone.render())")
        let report = AuditVerifier.verify(log: copy, key: f.key.publicKey, clientLogs: f.schoolLogs)
        XCTAssertFalse(report.isValid)
        for file in ["school-north-high.jsonl", "school-south-middle.jsonl"] {
            // The head round 2's assignment named is now another record; round 3's are past the end.
            XCTAssertTrue(report.problems.contains { $0.file == file && $0.message.contains("round 2 (train): the coordinator's audit head was seq")
                && $0.message.contains("the log was rewritten at or before that record") }, report.render())
            XCTAssertTrue(report.problems.contains { $0.file == file && $0.message.contains("round 3 (train)")
                && $0.message.contains("has no record seq") }, report.render())
        }
    }

    func testALogResignedWithAnExtraSchoolCreditedFails() throws {
        let f = try makeFederation()
        let copy = try resigned(f.log, key: f.key) { objects in
            objects.map { o in
                guard o["event"]?.stringValue == "roundCommitted", o["round"]?.intValue == 2, var by = o["examplesBySchool"]?.objectValue else { return o }
                var o = o
                by["ghost-school"] = .int(500)
                o["examplesBySchool"] = .object(by)
                o["examples"] = .int((o["examples"]?.intValue ?? 0) + 500)
                return o
            }
        }
        let commitLine = try Fixture.lines(copy).firstIndex { String(decoding: $0, as: UTF8.self).contains("ghost-school") }! + 1
        // Even without the school logs: the commit credits a school whose update no record accepts.
        let alone = AuditVerifier.verify(log: copy, key: f.key.publicKey)
        XCTAssertTrue(alone.problems.contains { $0.line == commitLine && $0.message.contains("credits school ghost-school with 500 examples")
            && $0.message.contains("no updateReceived record of round 2") }, alone.render())
        // And the schools' anchors of the evaluation of round 2 (sent after the commit) no longer match.
        let report = AuditVerifier.verify(log: copy, key: f.key.publicKey, clientLogs: f.schoolLogs)
        XCTAssertTrue(report.problems.contains { $0.file == "school-north-high.jsonl" && $0.message.contains("round 2 (evaluate)")
            && $0.message.contains("rewritten") }, report.render())
    }

    func testSinceNamesTheRecordTheLastVerificationEndedAt() throws {
        let f = try makeFederation()
        let first = AuditVerifier.verify(log: f.log, key: f.key.publicKey)
        let head = try XCTUnwrap(first.head)
        XCTAssertEqual(AuditPosition(head.description), head)
        XCTAssertNil(AuditPosition("12:abc"))
        XCTAssertTrue(AuditVerifier.verify(log: f.log, key: f.key.publicKey, since: head).isValid)
        let wrong = AuditVerifier.verify(log: f.log, key: f.key.publicKey, since: AuditPosition(seq: head.seq, hash: String(repeating: "0f", count: 32)))
        XCTAssertTrue(wrong.problems.contains { $0.line == head.seq && $0.message.contains("--since") && $0.message.contains("rewritten") }, wrong.render())
        let beyond = AuditVerifier.verify(log: f.log, key: f.key.publicKey, since: AuditPosition(seq: head.seq + 5, hash: head.hash))
        XCTAssertTrue(beyond.problems.contains { $0.message.contains("no record seq \(head.seq + 5)") }, beyond.render())
        // A log re-signed without round 2 no longer holds the record the officer last saw.
        let copy = try resigned(f.log, key: f.key) { $0.filter { $0["round"]?.intValue != 2 } }
        XCTAssertFalse(AuditVerifier.verify(log: copy, key: f.key.publicKey, since: head).isValid)
    }

    /// An empty school log, and a selected school no given log speaks for, are notes; a head
    /// older than its round's start is a stale anchor.
    func testSilentSchoolsAreNotedAndStaleAnchorsNamed() throws {
        let f = try makeFederation()
        let empty = Fixture.folder().appendingPathComponent("school-west.jsonl")
        try Data().write(to: empty)
        let report = AuditVerifier.verify(log: f.log, key: f.key.publicKey, clientLogs: [f.schoolLogs[0], empty])
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertTrue(report.notes.contains { $0.file == "school-west.jsonl" && $0.message.contains("no entries") }, report.render())
        XCTAssertTrue(report.notes.contains { $0.message.contains("school south-middle was selected in 3 round(s)") }, report.render())

        let north = try SchoolLog(url: Fixture.folder().appendingPathComponent("school-north-high.jsonl"))
        let first = try AuditRecord(line: 1, bytes: try Fixture.lines(f.log)[0])
        var stale = SchoolLogEvent(.anchorSeen, school: "north-high", round: 3, task: "train", federation: "district-7")
        stale.auditSeq = 1
        stale.auditHash = first.hash
        try north.append(stale)
        let staleReport = AuditVerifier.verify(log: f.log, key: f.key.publicKey, clientLogs: [north.url])
        XCTAssertTrue(staleReport.problems.contains { $0.line == 1 && $0.message.contains("stale audit head") }, staleReport.render())
    }
}
