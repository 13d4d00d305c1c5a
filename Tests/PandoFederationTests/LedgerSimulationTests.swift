import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoFederation
import PandoLedger
import PandoText
import PandoTraining
import XCTest

/// The in-process federation with the ledger as the coordinator's record keeper.
final class LedgerSimulationTests: XCTestCase {
    /// The tiny fixture simulation of `SimulationTests`, recording to `state`;
    /// `canary` is planted in every text of school-1.
    func simulation(state: URL, canary: String = "", rounds: Int = 2) throws -> (LocalFederation, FederationLedger) {
        let folder = try Fixtures.tinyModelFolder()
        let (model, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]), seed: 7)
        let tokenizer = try BertTokenizer(folder: folder)
        var rows = synthetic(count: 120, seed: 1)
        for i in stride(from: 1, to: 120, by: 3) where !canary.isEmpty { rows[i].text = canary + " " + rows[i].text }
        let train = try dataset(rows)
        let test = try dataset(synthetic(count: 60, seed: 2))
        let schools = (0..<3).map { s in
            SimulatedSchool(id: "school-\(s)", data: train.subset(Array(stride(from: s, to: 120, by: 3)).filter { $0 % 5 != s || s == 0 }))
        }
        var settings = SimulationSettings()
        settings.rounds = rounds
        settings.plan.epochs = 2
        settings.plan.learningRate = 2e-3
        settings.plan.batchSize = 16
        settings.plan.maxLength = 24
        settings.plan.dropout = false
        let federation = try LocalFederation(global: model, tokenizer: tokenizer, schools: schools, test: test,
                                             strategy: FedAvg(), settings: settings)
        let ledger = try FederationLedger(folder: state, federationID: "test", tokenizerFolder: folder)
        try federation.record(to: ledger)
        return (federation, ledger)
    }

    func verify(_ ledger: FederationLedger) throws -> VerificationReport {
        AuditVerifier.verify(log: ledger.auditLogURL, key: try AuditPublicKey.load(from: ledger.publicKeyURL),
                             clientLogs: ledger.schoolLogURLs, checkpoints: ledger.folder)
    }

    func testRoundsRecordContentAddressedVersionsAndAVerifiableTrailWithoutData() throws {
        let state = try Fixtures.temporaryDirectory().appendingPathComponent("state")
        let canary = "CANARY-\(UUID().uuidString)"
        let (federation, ledger) = try simulation(state: state, canary: canary)
        XCTAssertTrue(federation.schools[1].data.examples.allSatisfy { $0.text.contains(canary) })
        let base = federation.version
        XCTAssertTrue(Digest.isSHA256(base))
        let records = try federation.run()

        // Three versions (base + two rounds), each named by the SHA-256 of its weights, chained by parent.
        let versions = try ledger.ledger.versions()
        XCTAssertEqual(versions.count, 3)
        for v in versions {
            XCTAssertEqual(try Digest.sha256(fileAt: ledger.ledger.store.weights(of: v.id)), v.id)
            XCTAssertNotNil(v.files["vocab.txt"], "each version is a complete model folder")
        }
        XCTAssertEqual(versions.map(\.id), [base] + records.map(\.version))
        XCTAssertEqual(versions.map(\.parent), [nil, base, records[0].version])
        XCTAssertEqual(records.map(\.baseVersion), [base, records[0].version])
        XCTAssertTrue(records.allSatisfy(\.committed))
        XCTAssertEqual(try ledger.ledger.head()?.id, federation.version)
        XCTAssertEqual(versions[2].strategy, "fedavg")
        XCTAssertEqual(versions[2].strategyParameters["serverLearningRate"], .int(1))
        XCTAssertEqual(versions[2].strategyParameters["localLearningRate"], .double(0.002))
        XCTAssertEqual(versions[2].metrics["accuracy"], records[1].test["accuracy"])
        // A version folder loads back as the global model it records.
        let (reloaded, _) = try BertModel.load(from: ledger.ledger.store.folder(of: federation.version))
        XCTAssertEqual(reloaded.parameters.values, federation.global.parameters.values)

        // The audit log: every selection, every update with its hash, every commit.
        let audit = try AuditRecord.readAll(ledger.auditLogURL).records
        XCTAssertEqual(audit.filter { $0.event == .schoolSelected }.count, 6)
        XCTAssertEqual(audit.filter { $0.event == .roundCommitted }.map(\.newVersion), records.map(\.version))
        let received = audit.filter { $0.event == .updateReceived }
        XCTAssertEqual(received.count, 6)
        for r in records {
            XCTAssertEqual(r.updateSHA256.count, 3)
            for (school, sha) in r.updateSHA256 {
                let entry = received.first { $0.round == r.round && $0.school == school }
                XCTAssertEqual(entry?.updateSHA256, sha)
                XCTAssertEqual(entry?.wireBytes, r.bytesPerUpdate)
                XCTAssertEqual(entry?.baseVersion, r.baseVersion)
                XCTAssertEqual(entry?.updateL2Norm ?? 0, r.updateNorms[school] ?? -1, accuracy: 1e-9 * (r.updateNorms[school] ?? 1))
            }
        }
        let committed = audit.first { $0.event == .roundCommitted }
        XCTAssertEqual(committed?.examplesBySchool, Dictionary(uniqueKeysWithValues: federation.schools.map { ($0.id, $0.data.count) }))

        // One log per school, each checked against the signed log; checkpoints hash to their ids.
        XCTAssertEqual(ledger.schoolLogURLs.map(\.lastPathComponent), ["school-0.jsonl", "school-1.jsonl", "school-2.jsonl"])
        let report = try verify(ledger)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.recordsChecked, audit.count)
        XCTAssertEqual(report.validSignatures, audit.count)
        XCTAssertEqual(report.clientEntriesChecked, 6)
        XCTAssertEqual(report.versionFilesChecked, 3)

        // No text of the data anywhere in the state folder.
        let fm = FileManager.default
        var files = 0
        let enumerator = fm.enumerator(at: state, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in enumerator where (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true {
            files += 1
            let data = try Data(contentsOf: url)
            for needle in [canary, canary.lowercased()] {
                XCTAssertNil(data.range(of: Data(needle.utf8)), "\(url.path) contains the canary")
            }
        }
        XCTAssertGreaterThan(files, 10)

        // Reopening continues the federation from its head, with the head's weights.
        ledger.close()
        let (again, ledger2) = try simulation(state: state, rounds: 1)
        XCTAssertEqual(again.version, federation.version)
        XCTAssertEqual(again.nextRound, 3)
        XCTAssertEqual(again.global.parameters.values, federation.global.parameters.values)
        let more = try again.run()
        XCTAssertEqual(more.map(\.round), [3])
        XCTAssertEqual(more[0].baseVersion, federation.version)
        XCTAssertEqual(try ledger2.ledger.versions().count, 4)
        let report2 = try verify(ledger2)
        XCTAssertTrue(report2.isValid, report2.render())
        XCTAssertEqual(report2.clientEntriesChecked, 9)
    }

    func testAnInvalidUpdateIsRecordedAsRejectedAndAFailedQuorumAborts() throws {
        let state = try Fixtures.temporaryDirectory().appendingPathComponent("state")
        let (federation, ledger) = try simulation(state: state)
        federation.tamper = { update in
            if update.school == "school-1" { update.delta.buffer[7] = .nan }
        }
        let base = federation.version
        let first = try federation.runRound()
        XCTAssertTrue(first.committed)
        XCTAssertEqual(Set(first.updateNorms.keys), ["school-0", "school-2"])
        XCTAssertTrue(first.rejected["school-1"]?.contains("NaN") ?? false, "\(first.rejected)")
        XCTAssertEqual(first.examples, federation.schools[0].data.count + federation.schools[2].data.count)

        let audit = try AuditRecord.readAll(ledger.auditLogURL).records
        let rejected = audit.filter { $0.event == .updateRejected }
        XCTAssertEqual(rejected.count, 1)
        XCTAssertEqual(rejected.first?.school, "school-1")
        XCTAssertEqual(rejected.first?.updateSHA256, first.updateSHA256["school-1"])
        XCTAssertTrue(rejected.first?.reason?.contains("NaN") ?? false)
        XCTAssertTrue(rejected.first?.updateL2Norm?.isNaN ?? false)
        XCTAssertEqual(audit.last?.event, .roundCommitted)
        XCTAssertEqual(audit.last?.examplesBySchool.map { Set($0.keys) }, ["school-0", "school-2"])

        // Every update invalid: nothing reaches the quorum, the round is aborted, the head stays.
        federation.tamper = { update in update.delta.buffer[0] = .infinity }
        let second = try federation.runRound()
        XCTAssertFalse(second.committed)
        XCTAssertEqual(second.version, first.version)
        XCTAssertEqual(second.rejected.count, 3)
        XCTAssertEqual(try ledger.ledger.round(2).status, .aborted)
        XCTAssertTrue(try ledger.ledger.round(2).reason?.contains("quorum") ?? false)
        XCTAssertEqual(try ledger.ledger.versions().map(\.id), [base, first.version])
        XCTAssertEqual(try ledger.ledger.head()?.id, first.version)

        let report = try verify(ledger)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.clientEntriesChecked, 6)
        XCTAssertEqual(report.notes.count, 4, report.render())   // the school logs' updates the coordinator rejected
    }

    func testWireHashIsTheSHA256OfTheLittleEndianFloat32Bytes() {
        let delta = buffer(smallLayout(), (0..<12).map { Float($0) * 0.25 - 1 })
        var bytes = Data()
        for v in delta.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        let u = update(delta)
        XCTAssertEqual(bytes.count, u.wireBytes)
        XCTAssertEqual(u.wireSHA256, Digest.sha256(bytes))
    }
}
