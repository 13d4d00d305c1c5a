import Foundation
import PandoData
import PandoEngine
import PandoLedger
import PandoTraining
@testable import PandoServices
import PandoTestSupport
import XCTest

/// Issue 15, item 3: Hugging Face loads what Pando writes and predicts the same. CI has no torch,
/// so `Tests/Fixtures/hf_predictions.json` (make_hf_prediction_fixtures.py) holds what
/// transformers read from and predicted with folders made by `pando versions create` +
/// `pando versions export`; this test rebuilds the same folders through the same code and checks
/// the bytes are those transformers saw, the config carries what transformers read, Pando's
/// predictions equal transformers' to 1e-5, and a head transformers cannot express is written
/// so that it refuses it.
final class HuggingFaceRoundTripTests: XCTestCase {
    struct Case: Decodable {
        var family, name, task, pooling: String
        var labels: [String]
        var seed: UInt64
        var max_length: Int
        var weights_sha256: String
        var texts: [String]
        var expressible: Bool
        var architectures: [String]
        var hf_class, problem_type: String?
        var num_labels: Int?
        var pando_transformers: String?
        var label2id: [String: Int]?
        var hf_input_ids: [[Int32]]?
        var hf_outputs: [[Double]]?
        var id2labelMap: [String: String]?
        /// The drawn pooler head the base model carries (expressible heads only).
        var head: [String: HeadTensor]?

        enum CodingKeys: String, CodingKey {
            case family, name, task, pooling, labels, seed, max_length, weights_sha256, texts, expressible, architectures, hf_class,
                 problem_type, num_labels, label2id, hf_input_ids, hf_outputs, pando_transformers, head
            case id2labelMap = "id2label"
        }
    }

    struct HeadTensor: Decodable { var shape: [Int]; var values: [Double] }
    struct Fixture: Decodable { var transformers: String; var cases: [Case] }

    static func head(_ c: Case, pooling: Pooling) -> ClassifierHead {
        let task = TaskKind(rawValue: c.task)!
        return ClassifierHead(objective: task.objective, labels: task == .regression ? ["score"] : c.labels, pooling: pooling)
    }

    /// The base model the fixture script gave `pando versions create`: the family's encoder with
    /// the case's drawn pooler head (the same values; the script wrote them with safetensors).
    static func baseModel(_ c: Case, work: URL) throws -> URL {
        let encoder = try encoder(c.family)
        guard let tensors = c.head else { return encoder }
        let (model, _) = try BertModel.load(from: encoder, head: head(c, pooling: .pooler), seed: 0)
        for (name, t) in tensors {
            let spec = try XCTUnwrap(model.layout.tensors.first { $0.name == name }, name)
            XCTAssertEqual(spec.shape, t.shape, name)
            let view = model.parameters.view(spec)
            for (i, v) in t.values.enumerated() { view.base[i] = Float(v) }
        }
        let folder = work.appendingPathComponent("\(c.family)-\(c.name)-base")
        let companions = try FileManager.default.contentsOfDirectory(at: encoder, includingPropertiesForKeys: nil)
            .filter { !["config.json", "model.safetensors"].contains($0.lastPathComponent) }
        try model.save(to: folder, copying: companions)
        return folder
    }

    static func encoder(_ family: String) throws -> URL {
        switch family {
        case "bert": try TestFixtures.tinyModelFolder()
        case "distilbert": TestFixtures.url("families/distilbert_encoder")
        default: TestFixtures.url("families/roberta_encoder")
        }
    }

    /// `pando versions create` then `pando versions export`, as the fixture script ran them.
    static func exportedVersion(_ c: Case, work: URL) throws -> (version: URL, export: URL) {
        let state = work.appendingPathComponent("\(c.family)-\(c.name)-state")
        let id = try FederationStart.create(state: state, federationID: "hf-fixture", baseModel: try baseModel(c, work: work),
                                            task: TaskKind(rawValue: c.task)!, labels: c.labels, seed: c.seed, maxLength: c.max_length,
                                            pooling: Pooling(rawValue: c.pooling)!)
        let store = try CheckpointStore(folder: state.appendingPathComponent("versions"), readOnly: true)
        let export = work.appendingPathComponent("\(c.family)-\(c.name)")
        try store.export(id, to: export)
        return (store.folder(of: id), export)
    }

    func testPandoFoldersPredictWhatTransformersPredicts() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: TestFixtures.url("hf_predictions.json")))
        XCTAssertEqual(Set(fixture.cases.map(\.family)), ["bert", "distilbert", "roberta"])
        XCTAssertEqual(Set(fixture.cases.filter(\.expressible).map(\.task)), ["classification", "multi-label", "regression"])
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-hf-roundtrip")
        defer { try? FileManager.default.removeItem(at: work) }
        var worst = 0.0
        for c in fixture.cases {
            let what = "\(c.family) \(c.name)"
            let (version, export) = try Self.exportedVersion(c, work: work)
            XCTAssertEqual(try Digest.sha256(fileAt: export.appendingPathComponent("model.safetensors")), c.weights_sha256,
                           "\(what): Pando no longer writes the bytes transformers was run on: regenerate Tests/Fixtures/hf_predictions.json with make_hf_prediction_fixtures.py where torch is installed")
            let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as? [String: Any])
            XCTAssertEqual(config["architectures"] as? [String], c.architectures, what)

            // The export is the coordinator's version: the same predictions, labels, thresholds and max length.
            let exported = try FineTunedModel(folder: export), coordinator = try FineTunedModel(folder: version)
            let record = try XCTUnwrap(exported.record, "\(what): the export carries pando-training.json")
            XCTAssertEqual(record.federation, "hf-fixture")
            XCTAssertEqual(exported.maxLength, c.max_length, what)
            XCTAssertEqual(exported.labels, c.task == "regression" ? ["score"] : c.labels, what)
            XCTAssertEqual(exported.model.head.pooling.rawValue, c.pooling, what)
            if c.task == "multi-label" { XCTAssertEqual(record.thresholds, [Float](repeating: 0.5, count: c.labels.count), what) }
            let predictions = exported.predict(c.texts)
            XCTAssertEqual(try predictions.map { try PredictionOutput.json($0, labels: exported.labels) },
                           try coordinator.predict(c.texts).map { try PredictionOutput.json($0, labels: coordinator.labels) },
                           "\(what): pando predict on the export prints what it prints on the coordinator's version")

            guard c.expressible else {
                // Transformers refuses it (the fixture recorded the refusal): the config names the bare
                // encoder and says why; the shapes are not those transformers builds from the config.
                XCTAssertEqual(c.architectures, [try XCTUnwrap(ModelFamily(rawValue: c.family)).baseModelClass], what)
                XCTAssertEqual(config["pando_transformers"] as? String, c.pando_transformers, what)
                XCTAssertTrue((c.pando_transformers ?? "").contains("cannot compute this head"), what)
                let family = try XCTUnwrap(ModelFamily(rawValue: c.family))
                let file = try SafeTensors.File(url: export.appendingPathComponent("model.safetensors"))
                if c.task == "ordinal" {
                    XCTAssertEqual(file.entries[family.classifierPrefix + "weight"]?.shape.first, 1, "\(what): one weight row, not one per level")
                } else {
                    XCTAssertEqual(file.entries[family.poolerPrefix + "weight"]?.shape.first, 0, "\(what): the unused dense layer has zero rows")
                    XCTAssertEqual(file.entries[family.poolerPrefix + "bias"]?.shape, [0], what)
                }
                continue
            }
            // What transformers read from config.json, exactly.
            XCTAssertEqual(c.architectures, [try XCTUnwrap(c.hf_class)], "\(what): architectures names the class transformers built")
            XCTAssertEqual(config["problem_type"] as? String, c.problem_type, what)
            XCTAssertNil(config["num_labels"], "\(what): transformers counts id2label")
            XCTAssertEqual((config["id2label"] as? [String: String])?.count, c.num_labels, what)
            XCTAssertEqual(config["id2label"] as? [String: String], c.id2labelMap, what)
            XCTAssertEqual((config["label2id"] as? [String: Int]), c.label2id, what)
            XCTAssertNil(config["pando_transformers"], what)
            XCTAssertEqual(exported.encode(c.texts), c.hf_input_ids, "\(what): the same token ids as transformers' tokenizer")

            let hf = try XCTUnwrap(c.hf_outputs)
            XCTAssertEqual(predictions.count, hf.count)
            for (p, expected) in zip(predictions, hf) {
                let got: [Float] = c.task == "regression" ? [try XCTUnwrap(p.score)] : try XCTUnwrap(p.probabilities)
                XCTAssertEqual(got.count, expected.count, what)
                for (a, b) in zip(got, expected) { worst = max(worst, abs(Double(a) - b)) }
                for (a, b) in zip(got, expected) { XCTAssertEqual(Double(a), b, accuracy: 1e-5, "\(what): Pando vs transformers") }
            }
        }
        print("HuggingFaceRoundTripTests: max |pando − transformers| over \(fixture.cases.filter(\.expressible).count) heads = \(worst)")
    }

    /// A folder `pando train` writes (BertModel.save) for each objective and pooling carries the
    /// head transformers reads, or, for a head it cannot express, the marks that make it refuse;
    /// Pando reads each back to the same head and the same logits.
    func testSavedConfigsForEveryHead() throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-hf-configs")
        defer { try? FileManager.default.removeItem(at: work) }
        let sequences: [[Int32]] = [[2, 10, 11, 12, 3], [2, 40, 3], [2, 7, 8, 9, 50, 60, 3]]
        for family in ["bert", "distilbert", "roberta"] {
            let encoder = try Self.encoder(family)
            for objective in Objective.allCases {
                for pooling in Pooling.allCases {
                    let labels = objective == .meanSquaredError ? ["score"] : ["a", "b", "c"]
                    let head = ClassifierHead(objective: objective, labels: labels, pooling: pooling)
                    let (model, _) = try BertModel.load(from: encoder, head: head, seed: 3)
                    let folder = work.appendingPathComponent("\(family)-\(objective.rawValue)-\(pooling.rawValue)")
                    try model.save(to: folder)
                    let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("config.json"))) as? [String: Any])
                    let what = "\(family) \(objective) \(pooling)"
                    let problem = ["softmax": "single_label_classification", "sigmoid": "multi_label_classification",
                                   "mse": "regression", "ordinal": "single_label_classification"][objective.rawValue]
                    XCTAssertEqual(config["problem_type"] as? String, problem, what)
                    XCTAssertEqual(config["pando_pooling"] as? String, pooling.rawValue, what)
                    XCTAssertEqual(config["pando_objective"] as? String, objective == .ordinal ? "ordinal" : nil, what)
                    XCTAssertEqual((config["id2label"] as? [String: String])?.count, labels.count, what)
                    XCTAssertNil(config["num_labels"], what)
                    let expressible = objective != .ordinal && pooling == .pooler
                    XCTAssertEqual(head.transformersLimitation == nil, expressible, what)
                    XCTAssertEqual(config["architectures"] as? [String], [expressible ? model.config.family.sequenceClassifier : model.config.family.baseModelClass], what)
                    XCTAssertEqual(config["pando_transformers"] != nil, !expressible, what)
                    let (back, report) = try BertModel.load(from: folder)
                    XCTAssertEqual(back.head, head, what)
                    XCTAssertEqual(report.initialized, [], "\(what): nothing Pando reads is missing")
                    XCTAssertEqual(report.unused, [], what)
                    let a = BatchedInference(model: model, batchSize: 4, maxLength: 16).logits(sequences)
                    let b = BatchedInference(model: back, batchSize: 4, maxLength: 16).logits(sequences)
                    XCTAssertEqual(a, b, "\(what): the saved folder predicts as the model that wrote it")
                }
            }
        }
    }
}
