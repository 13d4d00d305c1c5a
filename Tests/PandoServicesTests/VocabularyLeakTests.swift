import Foundation
import Logging
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// What an update reveals about words (issue 16, item 1). Attack: look for the rows of the
/// word-embedding table that changed. Before the fix, a school's delta was non-zero exactly
/// in the rows of the tokens its students wrote, so a token only one school used showed up
/// in that school's delta and, through the average, in the new global model.
final class VocabularyLeakTests: XCTestCase {
    func testATokenOnlyOneSchoolUsesLeavesNoTraceInItsUpdateOrTheGlobalModel() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-vocabulary")
        let state = work.appendingPathComponent("state")
        let model = try TestFixtures.tinyModelFolder()
        var config = Federation.configuration(model: model, state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        // "tok93" appears only in north's texts; no school's text has tok60 … tok92.
        var schools = try Federation.schools()
        let secret = synthetic(count: 60, seed: 100).map { (text: $0.text + " tok93", label: $0.label) }
        schools[0] = LoopbackFederation.School(id: schools[0].id, training: try Federation.dataset(secret), validation: nil)
        let federation = try LoopbackFederation(configuration: config, schools: schools, workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("e2e"))
        let captured = work.appendingPathComponent("captured")
        try FileManager.default.createDirectory(at: captured, withIntermediateDirectories: true)
        federation.prepareAgent = { id, agent in
            agent.tamper = { url in try FileManager.default.copyItem(at: url, to: captured.appendingPathComponent("\(id).delta")) }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed)
        let head = ClassifierHead(objective: TaskKind.classification.objective, labels: Federation.labels)
        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"), head: head)
        let (new, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.version)"), head: head)
        let layout = base.layout
        let selection = TensorSelection(layout: layout, frozen: TensorSelection.embeddingTables)

        // The update: the bytes north sent hold no embedding table at all…
        let north = captured.appendingPathComponent("north.delta")
        let size = (try FileManager.default.attributesOfItem(atPath: north.path)[.size] as? Int) ?? 0
        XCTAssertEqual(size, 4 * selection.trainedCount, "north sent more than its trained tensors")
        XCTAssertLessThan(selection.trainedCount, layout.count)
        // … and, read back as the coordinator reads it, its rows are all zero.
        let delta = ParameterBuffer(layout: layout)
        try UpdateFile.read(north, into: delta, selection: selection)
        let H = base.config.hiddenSize
        let tok93 = 5 + 93  // the tiny vocabulary: 5 special tokens, then tok0 … tok93
        for name in TensorSelection.embeddingTables {
            XCTAssertTrue(delta.values(name).allSatisfy { $0 == 0 }, "\(name) moved in north's update")
        }
        // The global model: every row of every embedding table is the base's, bit for bit.
        for name in TensorSelection.embeddingTables {
            XCTAssertEqual(new.parameters.values(name), base.parameters.values(name), "\(name) changed in the new global model")
        }
        let row = Array(new.parameters.values("bert.embeddings.word_embeddings.weight")[(tok93 * H)..<((tok93 + 1) * H)])
        XCTAssertEqual(row, Array(base.parameters.values("bert.embeddings.word_embeddings.weight")[(tok93 * H)..<((tok93 + 1) * H)]))
        // The rest of the model did learn.
        XCTAssertNotEqual(new.parameters.values("classifier.weight"), base.parameters.values("classifier.weight"))
        // The audit says which tables were frozen.
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let started = try XCTUnwrap(records.first { $0.event == .roundStarted })
        XCTAssertEqual(started.strategyParameters?["frozenTensors"]?.stringValue,
                       TensorSelection.embeddingTables.sorted().joined(separator: ","))
    }

    /// A school declines a plan that would train the embedding tables (no DP yet), and the
    /// coordinator's configuration cannot ask for one.
    func testUnfrozenEmbeddingsAreRefusedOnBothSides() throws {
        var plan = LocalTrainingPlan()
        plan.freezeEmbeddings = false
        let decoded = try RoundParameters.decode(RoundParameters.encode(plan, labels: LabelSetID(task: .classification, labels: ["a", "b"])))
        XCTAssertFalse(decoded.freezeEmbeddings)
        var old = RoundParameters.encode(LocalTrainingPlan(), labels: LabelSetID(task: .classification, labels: ["a", "b"]))
        old["freezeEmbeddings"] = nil  // a coordinator that predates the field trains everything
        XCTAssertFalse(try RoundParameters.decode(old).freezeEmbeddings)
        let dir = try TestFixtures.temporaryDirectory(prefix: "pando-freeze-config")
        let yaml = dir.appendingPathComponent("coordinator.yaml")
        try """
        federation: {id: f, task: classification, labels: [a, b], base_model: \(dir.path)}
        local: {freeze_embeddings: false}
        coordinator: {state: s, certificate: c.pem, key: k.pem, ca: ca.pem}
        """.write(to: yaml, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CoordinatorConfiguration.load(from: yaml)) {
            XCTAssertTrue("\($0)".contains("local.freeze_embeddings") && "\($0)".contains("differential privacy"), "\($0)")
        }
    }
}
