import Foundation
import XCTest
@testable import PandoEngine

/// DistilBERT and RoBERTa (and the ordinal CORAL head on BERT) against PyTorch + transformers (Tests/Fixtures/families, made by
/// make_family_fixtures.py): logits, loss and every parameter's gradient of tiny random
/// models for each family's own head and for mean pooling; and the folders Pando saves
/// name and shape every tensor as the family's `…ForSequenceClassification` does.
final class FamilyParityTests: XCTestCase {
    static let cases = ["distilbert_softmax", "distilbert_regression", "distilbert_meanpool",
                        "roberta_softmax", "roberta_multilabel", "roberta_meanpool", "bert_ordinal"]

    static func head(_ info: [String: Any]) -> (ClassifierHead, Targets) {
        let outputs = info["num_labels"] as! Int
        let pooling = Pooling(rawValue: info["pooling"] as! String)!
        let labels = (0..<outputs).map { "l\($0)" }
        switch info["head"] as! String {
        case "softmax":
            return (ClassifierHead(objective: .softmaxCrossEntropy, labels: labels, pooling: pooling), .classes(info["labels"] as! [Int]))
        case "multilabel":
            return (ClassifierHead(objective: .sigmoidBinaryCrossEntropy, labels: labels, pooling: pooling),
                    .multiHot((info["labels"] as! [[Double]]).flatMap { $0.map(Float.init) }))
        case "ordinal":
            // K levels, K − 1 thresholds: target k is 1 when the level is above k.
            let levels = info["labels"] as! [Int]
            return (ClassifierHead(objective: .ordinal, labels: labels, pooling: pooling),
                    .multiHot(levels.flatMap { y in (0..<(outputs - 1)).map { Float(y > $0 ? 1 : 0) } }))
        default:
            return (ClassifierHead(objective: .meanSquaredError, labels: labels, pooling: pooling), .scores((info["labels"] as! [Double]).map(Float.init)))
        }
    }

    func testLogitsLossAndEveryGradientMatchPyTorch() throws {
        let familyBatch = Fixture.packedBatch(try Fixture.json("families/inputs.json"))
        let bertBatch = Fixture.packedBatch(try Fixture.json("tiny/inputs.json"))  // with segment ids 1
        var summary: [String] = []
        for name in Self.cases {
            let batch = name.hasPrefix("bert") ? bertBatch : familyBatch
            let info = try Fixture.json("families/\(name)/case.json")
            let (head, targets) = Self.head(info)
            let (model, report) = try BertModel.load(from: Fixture.url("families/\(name)"), head: head)
            XCTAssertEqual(model.config.family.rawValue, info["family"] as? String, name)
            XCTAssertEqual(report.initialized, [], name)
            XCTAssertEqual(report.unused, [], name)

            // Inference: the logits of an evaluation workspace.
            let eval = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: false)
            let logits = model.forward(batch, workspace: eval).array
            let expectedLogits = (info["logits"] as! [[Double]]).flatMap { $0.map(Float.init) }
            let logitError = maxDifference(logits, expectedLogits).diff
            XCTAssertLessThan(logitError, 1e-4, "\(name) logits")

            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: true)
            let grads = ParameterBuffer(layout: model.layout)
            let loss = model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: grads, dropout: nil)
            let expectedLoss = Float(info["loss"] as! Double)
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * max(1, abs(expectedLoss)), "\(name) loss")

            let reference = try SafeTensors.File(url: Fixture.url("families/\(name)/grads.safetensors"))
            XCTAssertEqual(Set(model.layout.tensors.map(\.name)), Set(reference.entries.keys), "\(name): Pando's tensors are HF's")
            var worst: Float = 0, worstRelative: Float = 0
            for spec in model.layout.tensors {
                let (diff, scale) = maxDifference(grads.view(spec).array, try reference.floats(spec.name))
                XCTAssertLessThanOrEqual(diff, 2e-5 * max(scale, 1e-2), "\(name): \(spec.name) max error \(diff) at scale \(scale)")
                worst = max(worst, diff)
                worstRelative = max(worstRelative, diff / max(scale, 1e-2))
            }
            summary.append("\(name): logits \(logitError), loss \(abs(loss - expectedLoss)), gradient max abs \(worst) (relative \(worstRelative))")
        }
        print("family parity:\n" + summary.joined(separator: "\n"))
    }

    /// Saving writes the family's architecture, config keys and tensor names, so
    /// transformers' `AutoModelForSequenceClassification` loads it without missing or
    /// unexpected keys; loading the saved folder gives the same logits.
    func testSavedFoldersUseTheFamilysNamesAndReload() throws {
        let batch = Fixture.packedBatch(try Fixture.json("families/inputs.json"))
        for name in ["distilbert_softmax", "roberta_multilabel"] {
            let info = try Fixture.json("families/\(name)/case.json")
            let (head, _) = Self.head(info)
            let (model, _) = try BertModel.load(from: Fixture.url("families/\(name)"), head: head)
            let dir = try makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(at: dir) }
            try model.save(to: dir)

            let original = try SafeTensors.File(url: Fixture.url("families/\(name)/model.safetensors"))
            let saved = try SafeTensors.File(url: dir.appendingPathComponent("model.safetensors"))
            XCTAssertEqual(Set(saved.entries.keys), Set(original.entries.keys), name)
            for (key, entry) in original.entries {
                XCTAssertEqual(saved.entries[key]?.shape, entry.shape, "\(name) \(key)")
                XCTAssertEqual(try saved.floats(key), try original.floats(key), "\(name) \(key)")
            }
            let savedConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: Any]
            let hfConfig = try Fixture.json("families/\(name)/config.json")
            XCTAssertEqual(savedConfig["architectures"] as? [String], hfConfig["architectures"] as? [String], name)
            XCTAssertEqual(savedConfig["model_type"] as? String, hfConfig["model_type"] as? String, name)
            // Every architecture key transformers wrote is written back with its value.
            let architectureKeys = name.hasPrefix("distilbert")
                ? ["dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings", "vocab_size", "pad_token_id", "activation", "sinusoidal_pos_embds"]
                : ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings", "vocab_size",
                   "pad_token_id", "type_vocab_size", "layer_norm_eps", "hidden_act"]
            for key in architectureKeys {
                XCTAssertEqual("\(savedConfig[key] ?? "absent")", "\(hfConfig[key] ?? "absent")", "\(name): \(key)")
            }

            let (reloaded, report) = try BertModel.load(from: dir)
            XCTAssertEqual(report.initialized, [])
            XCTAssertEqual(reloaded.head, model.head)
            XCTAssertEqual(reloaded.config.positionOffset, model.config.positionOffset)
            let a = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: false)
            let b = BertWorkspace(model: reloaded, capacity: BatchCapacity(sequences: 4, length: 11), training: false)
            XCTAssertEqual(model.forward(batch, workspace: a).array, reloaded.forward(batch, workspace: b).array, name)
        }
    }

    /// A pretrained encoder folder (no task head) gets a fresh head and keeps every encoder tensor.
    func testBareEncoderNamesLoadWithAFreshHead() throws {
        let (model, _) = try BertModel.load(from: Fixture.url("families/roberta_softmax"),
                                            head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // As RobertaModel.save_pretrained names them: no "roberta." prefix, no head.
        let tensors = model.layout.tensors.filter { $0.name.hasPrefix("roberta.") }.map {
            SafeTensors.Tensor(name: String($0.name.dropFirst("roberta.".count)), shape: $0.shape, values: model.parameters.view($0))
        }
        try SafeTensors.write(tensors, metadata: [:], to: dir.appendingPathComponent("model.safetensors"))
        try FileManager.default.copyItem(at: Fixture.url("families/roberta_softmax/config.json"), to: dir.appendingPathComponent("config.json"))
        let (loaded, report) = try BertModel.load(from: dir, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        XCTAssertEqual(Set(report.initialized), ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"])
        XCTAssertEqual(loaded.parameters.values("roberta.encoder.layer.1.output.dense.weight"), model.parameters.values("roberta.encoder.layer.1.output.dense.weight"))
    }

    func testFamilyConfigErrorsNameTheField() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("config.json")
        func expect(_ json: String, _ field: String, line: UInt = #line) throws {
            try json.write(to: url, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try BertConfig(contentsOf: url), line: line) {
                XCTAssertTrue("\($0)".contains("'\(field)'") && "\($0)".contains(url.path), "\($0)", line: line)
            }
        }
        try expect(#"{"model_type": "distilbert", "vocab_size": 10, "n_layers": 1, "n_heads": 2, "hidden_dim": 8}"#, "dim")
        try expect(#"{"model_type": "distilbert", "vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 3, "hidden_dim": 8}"#, "n_heads")
        try expect(#"{"model_type": "distilbert", "vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2, "hidden_dim": 8, "sinusoidal_pos_embds": true}"#, "sinusoidal_pos_embds")
        try expect(#"{"model_type": "distilbert", "vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2, "hidden_dim": 8, "activation": "swish"}"#, "activation")
        try expect(#"{"model_type": "distilbert", "vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2, "hidden_dim": 8, "dropout": 1.5}"#, "dropout")
        try expect(#"{"model_type": "roberta", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 2, "pad_token_id": 1}"#, "max_position_embeddings")
        try expect(#"{"model_type": "gpt2", "vocab_size": 10}"#, "model_type")

        try #"{"model_type": "roberta", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 514, "pad_token_id": 1, "type_vocab_size": 1}"#
            .write(to: url, atomically: true, encoding: .utf8)
        let roberta = try BertConfig(contentsOf: url)
        XCTAssertEqual(roberta.family, .roberta)
        XCTAssertEqual(roberta.positionOffset, 2)
        XCTAssertEqual(roberta.maxPositions, 512, "the longest sequence: two rows belong to padding")
        XCTAssertEqual(roberta.positionRows, 514)
    }

    /// An ordinal head saves its one weight row and K − 1 biases with `pando_objective` and
    /// loads back as an ordinal head with the same logits.
    func testOrdinalHeadRoundTrips() throws {
        let batch = Fixture.packedBatch(try Fixture.json("tiny/inputs.json"))
        let head = ClassifierHead(objective: .ordinal, labels: ["A1", "A2", "B1", "B2"])
        let (model, _) = try BertModel.load(from: Fixture.url("families/bert_ordinal"), head: head)
        XCTAssertEqual(model.layout["classifier.weight"]?.shape, [1, 32])
        XCTAssertEqual(model.layout["classifier.bias"]?.shape, [3])
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try model.save(to: dir)
        let (reloaded, report) = try BertModel.load(from: dir)
        XCTAssertEqual(reloaded.head, head)
        XCTAssertEqual(report.initialized, [])
        let a = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: false)
        let b = BertWorkspace(model: reloaded, capacity: BatchCapacity(sequences: 4, length: 11), training: false)
        XCTAssertEqual(model.forward(batch, workspace: a).array, reloaded.forward(batch, workspace: b).array)
    }

    /// The model a DistilBERT checkpoint's config describes is refused when the weights are BERT's.
    func testWeightsOfAnotherFamilyAreNamed() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Fixture.url("tiny/softmax/model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        try FileManager.default.copyItem(at: Fixture.url("families/distilbert_softmax/config.json"), to: dir.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try BertModel.load(from: dir, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))) {
            XCTAssertTrue("\($0)".contains("distilbert") && "\($0)".contains("model.safetensors"), "\($0)")
        }
    }
}
