import Foundation
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import XCTest

/// `local.freeze_layers` and `federation.pooling`: the lowest layers and an unused pooler are
/// neither trained nor sent, the head reads the encoder as the federation says at every school.
final class FrozenLayersFederationTests: XCTestCase {
    func testFrozenLayersAndMeanPoolingStayOutOfTheUpdate() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-frozen-layers")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        config.plan.freezeLayers = 1
        config.plan.pooling = .mean
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("frozen"))
        let sizes = SizeLog()
        federation.prepareAgent = { _, agent in
            agent.tamper = { url in sizes.add((try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0) }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.accepted.count, 3)
        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"))
        let (new, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.version)"))
        XCTAssertEqual(new.head.pooling, .mean, "the versions record the federation's pooling")
        let selection = TensorSelection(layout: base.layout, plan: config.plan)
        let frozen = base.layout.tensors.filter { selection.frozen.contains($0.name) }.map(\.name)
        XCTAssertTrue(frozen.contains { $0.hasPrefix("bert.encoder.layer.0.") })
        XCTAssertFalse(frozen.contains { $0.hasPrefix("bert.encoder.layer.1.") })
        XCTAssertTrue(frozen.contains("bert.pooler.dense.weight"))
        for name in frozen { XCTAssertEqual(new.parameters.values(name), base.parameters.values(name), "\(name) moved") }
        XCTAssertNotEqual(new.parameters.values("bert.encoder.layer.1.output.dense.weight"), base.parameters.values("bert.encoder.layer.1.output.dense.weight"))
        XCTAssertEqual(sizes.values, [4 * selection.trainedCount, 4 * selection.trainedCount, 4 * selection.trainedCount], "each update carries the trained tensors only")
        let started = try XCTUnwrap(try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records.first { $0.event == .roundStarted })
        XCTAssertTrue(started.strategyParameters?["frozenTensors"]?.stringValue?.contains("bert.encoder.layer.0.attention.self.query.weight") ?? false)
    }
}

/// Update sizes seen by the schools' hooks.
final class SizeLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func add(_ v: Int) { lock.lock(); list.append(v); lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return list }
}
