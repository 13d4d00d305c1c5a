import Foundation
import PandoCertificates
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import PandoTransport
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

/// A school rebuilds the base version id with the federation's pooling: a cls or mean head writes
/// its unused dense layer with zero rows (so transformers refuses the folder), and a base version
/// made before that, with the layer whole, is still recognised by that older form's id.
final class BaseVersionPoolingTests: XCTestCase {
    func testSchoolRebuildsTheBaseIdWithTheFederationsPooling() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-base-pooling")
        defer { try? FileManager.default.removeItem(at: work) }
        let model = try TestFixtures.tinyModelFolder()
        let pki = work.appendingPathComponent("pki")
        try CertificateAuthority.initialise(at: pki, districtName: "base-pooling district").issueSchool(id: "north")
        let transport = SchoolTransportConfiguration.fromSchoolFolder(pki.appendingPathComponent("schools/north").path, coordinatorHost: "127.0.0.1")
        let config = SchoolConfiguration(data: work, format: DataFormat(task: .classification), labels: Federation.labels, baseModel: model,
                                         transport: transport, cache: work.appendingPathComponent("cache"), log: work.appendingPathComponent("school.jsonl"))
        let agent = try SchoolAgent(configuration: config, training: Federation.dataset(synthetic(count: 20, seed: 1)), validation: nil,
                                    logger: LogCapture().logger("school"))
        func id(_ pooling: Pooling, full: Bool = false) throws -> String {
            let folder = work.appendingPathComponent("\(pooling.rawValue)-\(full)")
            let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: Federation.labels, pooling: pooling)
            try BertModel.load(from: model, head: head, seed: 42).0.save(to: folder, fullDenseLayer: full)
            return try Digest.sha256(fileAt: folder.appendingPathComponent("model.safetensors"))
        }
        let pooler = try id(.pooler), mean = try id(.mean), legacyMean = try id(.mean, full: true)
        XCTAssertNotEqual(mean, pooler, "the unused dense layer has zero rows")
        XCTAssertEqual(legacyMean, pooler, "before, a mean head's weights were written as a pooler head's")
        let got = try await agent.baseVersionID(seed: 42)
        XCTAssertEqual(got, pooler)
        let gotMean = try await agent.baseVersionID(seed: 42, pooling: Pooling.mean, root: mean)
        XCTAssertEqual(gotMean, mean)
        let gotLegacy = try await agent.baseVersionID(seed: 42, pooling: Pooling.mean, root: legacyMean)
        XCTAssertEqual(gotLegacy, legacyMean, "a base version made before zero rows")
        let gotOther = try await agent.baseVersionID(seed: 42, pooling: Pooling.cls, root: "unrelated")
        XCTAssertEqual(gotOther, mean, "cls writes what mean writes; an unknown root gets the current id (then declined)")
    }
}

/// Update sizes seen by the schools' hooks.
final class SizeLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Int] = []
    func add(_ v: Int) { lock.lock(); list.append(v); lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return list }
}
