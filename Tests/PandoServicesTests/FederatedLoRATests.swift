import Foundation
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// Federated LoRA (issue 13, item 2): schools send only B and the head; the new version is the
/// base plus (α/r)·mean(B)·A with the round's shared A, exactly, as a plain model.
final class FederatedLoRATests: XCTestCase {
    func testRoundMergesTheMeanOfTheSchoolsAdaptersExactly() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-fed-lora")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        config.plan.lora = LoRAConfig(rank: 2, alpha: 4, targets: [.query, .value])
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("lora"))
        let captured = work.appendingPathComponent("captured")
        try FileManager.default.createDirectory(at: captured, withIntermediateDirectories: true)
        federation.prepareAgent = { id, agent in
            agent.tamper = { url in try FileManager.default.copyItem(at: url, to: captured.appendingPathComponent("\(id).delta")) }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.accepted.count, 3)

        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"))
        let (new, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.version)"))
        XCTAssertNil(new.lora, "versions stay plain models")
        XCTAssertEqual(new.layout, base.layout)
        let round = try XCTUnwrap(try FederatedLoRA.roundModel(global: base, plan: config.plan, round: report.round))
        let selection = TensorSelection(layout: round.layout, plan: config.plan)
        XCTAssertTrue(selection.trained.allSatisfy { $0.name.hasSuffix(".lora_B.weight") || $0.name.hasPrefix("classifier.") || $0.name.hasPrefix("bert.pooler.") },
                      "\(selection.trained.map(\.name))")
        // Each school sent the B matrices and the head only.
        let mean = ParameterBuffer(layout: round.layout)
        var total = 0.0
        for school in ["north", "south", "west"] {
            let file = captured.appendingPathComponent("\(school).delta")
            let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
            XCTAssertEqual(size, 4 * selection.trainedCount)
            XCTAssertLessThan(selection.trainedCount * 10, base.layout.count, "an update is a small fraction of the model")
            let delta = ParameterBuffer(layout: round.layout)
            try UpdateFile.read(file, into: delta, selection: selection)
            let n = Double(try XCTUnwrap(report.schoolFigures[school]?.trainingExamples))
            DeltaMath.addScaled(delta.buffer, by: Float(n), into: mean.buffer)
            total += n
        }
        DeltaMath.scale(mean.buffer, by: Float(1 / total))
        let lora = config.plan.lora!
        var worst = 0.0
        for l in 0..<base.config.layers {
            for t in [LoRATarget.query, .value] {
                let (aName, bName) = round.loraTensorNames(layer: l, target: t)
                let a = round.parameters.values(aName), b = mean.values(bName)
                let weight = aName.replacingOccurrences(of: ".lora_A.weight", with: ".weight")
                let w0 = base.parameters.values(weight), w1 = new.parameters.values(weight)
                let inputs = a.count / lora.rank, outputs = b.count / lora.rank
                for o in 0..<outputs {
                    for i in 0..<inputs {
                        var dw = 0.0
                        for r in 0..<lora.rank { dw += Double(b[o * lora.rank + r]) * Double(a[r * inputs + i]) }
                        worst = max(worst, abs(Double(w1[o * inputs + i]) - Double(w0[o * inputs + i]) - Double(lora.scale) * dw))
                    }
                }
            }
            let key = base.config.family.layerPrefix(l) + "attention.self.key.weight"
            XCTAssertEqual(new.parameters.values(key), base.parameters.values(key), "\(key) is no LoRA target: unchanged")
        }
        XCTAssertLessThan(worst, 1e-5, "the merged weights are base + (α/r)·mean(B)·A")
        XCTAssertNotEqual(new.parameters.values("bert.encoder.layer.0.attention.self.query.weight"),
                          base.parameters.values("bert.encoder.layer.0.attention.self.query.weight"), "the adapters did learn")
        let head = zip(new.parameters.values("classifier.weight"), base.parameters.values("classifier.weight")).map { $0 - $1 }
        let expectedHead = mean.values("classifier.weight")
        XCTAssertLessThan(zip(head, expectedHead).map { abs($0 - $1) }.max() ?? 1, 1e-6, "the head moved by the mean of its deltas")
    }

    /// LoRA composed with secure aggregation and DP-SGD at every school: the masked vector is
    /// the adapters' B and the head, the round commits, and the audit (ε included) verifies.
    func testLoRAWithSecureAggregationAndDPSGD() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-fed-lora-secure")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.minSchools = 4
        config.rounds.quorum = 4
        config.rounds.federatedEvaluation = false
        config.plan.lora = LoRAConfig(rank: 2, targets: [.query, .value])
        config.plan.privacy = RoundPrivacy(noiseMultiplier: 1.1, maxGradientNorm: 1, delta: 1e-5)
        config.secureAggregation = SecureAggregationSettings()
        let logs = state.appendingPathComponent("schools")
        let federation = try LoopbackFederation(configuration: config, schools: try SecureAggregationEndToEndTests.schools(4),
                                                workFolder: work.appendingPathComponent("run"), schoolLogFolder: logs, logger: LogCapture().logger("lora"))
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"))
        let round = try XCTUnwrap(try FederatedLoRA.roundModel(global: base, plan: config.plan, round: 1))
        let trained = TensorSelection(layout: round.layout, plan: config.plan).trainedCount
        let audit = state.appendingPathComponent("audit.jsonl")
        let records = try AuditRecord.readAll(audit).records
        XCTAssertEqual(records.first { $0.event == .secureAggregation }?.secureAggregation?["vectorLength"]?.intValue, trained)
        XCTAssertEqual(Set(records.filter { $0.event == .updateReceived }.compactMap(\.wireBytes)), [MaskedUpdateFile.size(words: trained + 1)])
        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let verified = AuditVerifier.verify(log: audit, keys: [key], clientLogs: (0..<4).map { logs.appendingPathComponent("school-\($0).jsonl") },
                                            privacy: PrivacyAccounting.recordedEpsilon)
        XCTAssertTrue(verified.isValid, verified.render())
        XCTAssertEqual(verified.privacyRecordsChecked, 4)
    }

    /// LoRA composed with int8 compression: the B matrices and the head travel as int8 rows.
    func testLoRAWithInt8Compression() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-fed-lora-int8")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        config.plan.lora = LoRAConfig(rank: 2, targets: [.query, .value])
        config.plan.compression = .int8
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("lora"))
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.accepted.count, 3)
        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"))
        let round = try XCTUnwrap(try FederatedLoRA.roundModel(global: base, plan: config.plan, round: 1))
        let pipeline = UpdatePipeline(layout: round.layout, plan: config.plan)
        let received = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records.filter { $0.event == .updateReceived }
        XCTAssertEqual(Set(received.compactMap(\.wireBytes)), [pipeline.encodedBytes])
        XCTAssertLessThan(pipeline.encodedBytes, 4 * pipeline.selection.trainedCount / 2, "int8 rows of B and the head")
        let (new, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.version)"))
        XCTAssertNotEqual(new.parameters.values("bert.encoder.layer.0.attention.self.value.weight"),
                          base.parameters.values("bert.encoder.layer.0.attention.self.value.weight"))
    }
}
