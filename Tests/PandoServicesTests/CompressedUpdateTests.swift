import Foundation
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// Compressed deltas over the real services: three schools on loopback, tiny model.
final class CompressedUpdateTests: XCTestCase {
    let head = ClassifierHead(objective: TaskKind.classification.objective, labels: Federation.labels)

    /// One loopback run of `rounds` rounds with `compression`, continuing `work` when it holds an
    /// earlier run (a restart of the coordinator and every school). Copies of the files the schools
    /// offered land in `work/captured/<school>-r<round>.delta`.
    func run(_ compression: UpdateCompression, rounds: Int, work: URL, logs: LogCapture) async throws -> [FederatedRoundReport] {
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: rounds)
        config.plan.compression = compression
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("compressed"))
        let captured = work.appendingPathComponent("captured")
        try FileManager.default.createDirectory(at: captured, withIntermediateDirectories: true)
        federation.prepareAgent = { id, agent in
            agent.tamper = { url in
                let round = url.deletingPathExtension().lastPathComponent.replacingOccurrences(of: "update-", with: "")
                try FileManager.default.copyItem(at: url, to: captured.appendingPathComponent("\(id)-\(round).delta"))
            }
        }
        return try await federation.run()
    }

    /// The committed version is base + Σ nᵢ·decode(fileᵢ) / Σ nᵢ of the files the schools sent;
    /// the bytes up are those files; the audit names the compression and every file's size.
    func checkRound(_ report: FederatedRoundReport, _ compression: UpdateCompression, work: URL) throws {
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.accepted.sorted(), ["north", "south", "west"])
        let state = work.appendingPathComponent("state")
        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"), head: head)
        let (new, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.version)"), head: head)
        var plan = LocalTrainingPlan()
        plan.compression = compression
        let pipeline = UpdatePipeline(layout: base.layout, plan: plan)
        XCTAssertEqual(report.bytesUp, UInt64(3 * pipeline.encodedBytes))
        XCTAssertLessThan(pipeline.encodedBytes, 4 * pipeline.selection.trainedCount / 3, "smaller than Float32")
        var expected = [Double](repeating: 0, count: base.layout.count)
        for (school, n) in ["north": 60, "south": 90, "west": 40] {
            let d = ParameterBuffer(layout: base.layout)
            try pipeline.read(work.appendingPathComponent("captured/\(school)-r\(report.round).delta"), into: d)
            for i in 0..<d.buffer.count { expected[i] += Double(n) * Double(d.buffer[i]) / 190 }
        }
        var worst = 0.0, moved = 0
        for i in 0..<expected.count {
            let step = Double(new.parameters.buffer[i]) - Double(base.parameters.buffer[i])
            worst = max(worst, abs(step - expected[i]))
            if step != 0 { moved += 1 }
        }
        XCTAssertLessThan(worst, 1e-6, "round \(report.round): the aggregate of the decoded updates")
        XCTAssertGreaterThan(moved, 0)
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let started = try XCTUnwrap(records.first { $0.event == .roundStarted && $0.round == report.round })
        XCTAssertEqual(started.strategyParameters?["updateCompression"]?.stringValue, compression.name)
        XCTAssertEqual(started.strategyParameters?["updateTransforms"]?.stringValue, UpdatePipeline.describe(plan))
        let received = records.filter { $0.event == .updateReceived && $0.round == report.round }
        XCTAssertEqual(received.count, 3)
        XCTAssertTrue(received.allSatisfy { $0.wireBytes == pipeline.encodedBytes }, "\(received.map(\.wireBytes))")
    }

    /// A school whose top-k file names an index past the model is left out, the audit naming
    /// the field, and the round commits with the other two.
    func testAHostileTopKFileIsLeftOutNamingTheField() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-topk-hostile")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.plan.compression = .topK(density: 0.05)
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("hostile"))
        federation.prepareAgent = { id, agent in
            guard id == "west" else { return }
            agent.tamper = { url in
                var bytes = [UInt8](try Data(contentsOf: url))
                let body = 8 + Int(bytes[6]) | Int(bytes[7]) << 8
                let k = Int(bytes[body]) | Int(bytes[body + 1]) << 8 | Int(bytes[body + 2]) << 16
                for b in 0..<4 { bytes[body + 8 + 4 * (k - 1) + b] = 0xFF }  // the last index: 2³² − 1
                try Data(bytes).write(to: url)
            }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed)
        XCTAssertEqual(report.accepted.sorted(), ["north", "south"])
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let rejected = try XCTUnwrap(records.first { $0.event == .updateRejected && $0.school == "west" })
        XCTAssertTrue(rejected.reason?.contains("topk.indices[") == true && rejected.reason?.contains("outside") == true, "\(rejected.reason ?? "")")
    }

    func testInt8FederationCommitsTheMeanOfTheDecodedUpdatesAndAuditsIt() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-int8")
        let reports = try await run(.int8, rounds: 1, work: work, logs: LogCapture())
        XCTAssertEqual(reports.count, 1)
        try checkRound(reports[0], .int8, work: work)
        XCTAssertTrue(String(decoding: try Data(contentsOf: work.appendingPathComponent("state/audit.jsonl")), as: UTF8.self).contains("int8-rows"))
    }

    /// Top-k with error feedback: each school keeps its residual privately; after a restart of
    /// every school (and the coordinator) the next round adds it.
    func testTopKFederationKeepsEachSchoolsResidualAcrossARestart() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-topk")
        let compression = UpdateCompression.topK(density: 0.05)
        let first = try await run(compression, rounds: 1, work: work, logs: LogCapture())
        try checkRound(first[0], compression, work: work)
        var before: [String: TopKResidual] = [:]
        for school in ["north", "south", "west"] {
            let url = work.appendingPathComponent("run/schools/\(school)/cache/topk-residual.bin")
            let residual = try XCTUnwrap(try TopKResidual.load(from: url), school)
            XCTAssertEqual(residual.round, 1)
            XCTAssertEqual(residual.baseVersion, first[0].baseVersion)
            XCTAssertEqual(residual.key.federation, "test-federation")
            XCTAssertGreaterThan(residual.values.filter { $0 != 0 }.count, 0, "what top-k did not send")
            let mode = try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? NSNumber
            XCTAssertEqual(mode?.intValue, 0o600)
            before[school] = residual
        }
        let logs = LogCapture()
        let second = try await run(compression, rounds: 1, work: work, logs: logs)
        XCTAssertEqual(second.first?.round, 2)
        try checkRound(second[0], compression, work: work)
        XCTAssertTrue(logs.contains("round 2: adding the top-k residual left by round 1"), "\(logs.lines.filter { $0.contains("residual") })")
        XCTAssertFalse(logs.contains("top-k residual is not used"))
        for school in ["north", "south", "west"] {
            let after = try XCTUnwrap(try TopKResidual.load(from: work.appendingPathComponent("run/schools/\(school)/cache/topk-residual.bin")))
            XCTAssertEqual(after.round, 2)
            XCTAssertEqual(after.baseVersion, first[0].version)
            XCTAssertNotEqual(after.values, before[school]!.values)
        }
    }
}
