import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoTraining
import XCTest

final class WorkflowTests: XCTestCase {
    /// A trained tiny checkpoint shared by the tests of this class.
    nonisolated(unsafe) static var checkpoint: URL?

    func trainedCheckpoint() throws -> URL {
        if let c = Self.checkpoint { return c }
        let folder = try TestFiles.tinyModel()
        let output = folder.deletingLastPathComponent().appendingPathComponent("out")
        let train = try dataset(synthetic(count: 160, seed: 1))
        try Trainer(baseModel: folder, task: .classification, labels: train.labels, options: quickOptions())
            .run(train: train, validation: try dataset(synthetic(count: 60, seed: 2)), output: output)
        Self.checkpoint = output
        return output
    }

    func testUnknownLabelFailsOrIsSkippedAndCounted() throws {
        let dir = try TestFiles.temporaryDirectory()
        let file = dir.appendingPathComponent("data.csv")
        try "text,label\ntok1 tok2,a\n\"tok3, tok4\",c\ntok11,b\n".write(to: file, atomically: true, encoding: .utf8)
        var format = DataFormat(task: .classification)
        let labels = try LabelMap(names: ["a", "b"])
        XCTAssertThrowsError(try format.load(file, labels: labels)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("data.csv:3"), text)
            XCTAssertTrue(text.contains("column 'label'"), text)
            XCTAssertTrue(text.contains("unknown label 'c'"), text)
        }
        format.policy = .skip
        try "text,label\ntok1 tok2,a\n\"tok3, tok4\",c\ntok11,b\n   ,a\n".write(to: file, atomically: true, encoding: .utf8)
        let data = try format.load(file, labels: labels)
        XCTAssertEqual(data.count, 2)
        XCTAssertEqual(data.report.skipped[.unknownLabel], 1)
        XCTAssertEqual(data.report.skipped[.emptyText], 1)
        XCTAssertEqual(data.report.firstSkippedLines[.unknownLabel], [3])
    }

    /// `pando quantize`'s folder predicts like the quantized checkpoint and is inference only:
    /// training from it and explanations are refused with the reason.
    func testInt8CheckpointPredictsAndRefusesTraining() throws {
        let source = try trainedCheckpoint()
        let float32 = try FineTunedModel(folder: source)
        let texts = synthetic(count: 12, seed: 8).map(\.text)
        float32.model.quantizeForInference()
        let expected = float32.predict(texts).map(\.probabilities)
        let out = try TestFiles.temporaryDirectory().appendingPathComponent("int8")
        try float32.model.saveInt8(to: out, copying: ["vocab.txt", "pando-training.json"].map { source.appendingPathComponent($0) })
        let int8 = try FineTunedModel(folder: out)
        XCTAssertEqual(int8.labels, float32.labels)
        XCTAssertEqual(int8.predict(texts).map(\.probabilities), expected)
        XCTAssertThrowsError(try int8.explain(texts)) { XCTAssertTrue("\($0)".contains("int8"), "\($0)") }
        XCTAssertThrowsError(try Trainer(baseModel: out, task: .classification, labels: try LabelMap(names: float32.labels), options: TrainingOptions())) {
            XCTAssertTrue("\($0)".contains("int8 checkpoint"), "\($0)")
        }
    }

    func testEvaluateJSONFields() throws {
        let model = try FineTunedModel(folder: try trainedCheckpoint())
        let dir = try TestFiles.temporaryDirectory()
        let file = dir.appendingPathComponent("test.jsonl")
        let rows = synthetic(count: 30, seed: 3)
        try rows.map { "{\"text\": \"\($0.text)\", \"label\": \"\($0.label)\"}" }.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        let data = try DataFormat(task: model.task).load(file, labels: model.labelMap)
        let metrics = try model.evaluate(data)
        let json = try JSONSerialization.jsonObject(with: try prettyJSON(metrics)) as! [String: Any]
        XCTAssertEqual(json["task"] as? String, "classification")
        XCTAssertNotNil(json["loss"] as? Double)
        let summary = try XCTUnwrap(json["summary"] as? [String: Double])
        for key in ["accuracy", "macro_f1", "weighted_f1", "loss"] { XCTAssertNotNil(summary[key], key) }
        let c = try XCTUnwrap(json["classification"] as? [String: Any])
        XCTAssertEqual((c["confusion"] as? [[Int]])?.count, 2)
        XCTAssertEqual((c["perClass"] as? [[String: Any]])?.map { $0["name"] as? String }, ["a", "b"])
        XCTAssertEqual(c["count"] as? Int, 30)
        XCTAssertTrue(metrics.table.contains("macro-F1"))
    }

    func testPredictJSONLinesShapeAndExplanation() throws {
        let model = try FineTunedModel(folder: try trainedCheckpoint())
        let texts = ["tok1 tok2 tok25", "tok12 tok13", "tok5"]
        let predictions = model.predict(texts, batchSize: 2)
        let explanations = try model.explain(texts)
        for (i, (p, e)) in zip(predictions, explanations).enumerated() {
            let line = try PredictionOutput.json(p, labels: model.labels, line: i + 1, explanation: e)
            XCTAssertFalse(line.contains("\n"))
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertEqual(object["line"] as? Int, i + 1)
            let label = try XCTUnwrap(object["label"] as? String)
            XCTAssertTrue(["a", "b"].contains(label))
            let probabilities = try XCTUnwrap(object["probabilities"] as? [String: Double])
            XCTAssertEqual(Set(probabilities.keys), ["a", "b"])
            XCTAssertEqual(probabilities.values.reduce(0, +), 1, accuracy: 1e-5)
            XCTAssertEqual(object["explained"] as? String, label)
            let tokens = try XCTUnwrap(object["tokens"] as? [[String: Any]])
            XCTAssertEqual(tokens.first?["token"] as? String, "[CLS]")
            XCTAssertEqual(tokens.count, texts[i].split(separator: " ").count + 2)
            let words = try XCTUnwrap(object["words"] as? [[String: Any]])
            XCTAssertEqual(words.map { $0["token"] as? String }, texts[i].split(separator: " ").map(String.init))
        }
        // Words of the explained class push towards it more than filler words do.
        let rows = synthetic(count: 40, seed: 8)
        var classWords: [Float] = [], filler: [Float] = []
        for e in try model.explain(rows.map(\.text)) {
            let own = e.output == "a" ? 0..<10 : 10..<20
            for w in e.words {
                let n = Int(w.token.dropFirst(3))!
                if own.contains(n) { classWords.append(w.score) } else if n >= 20 { filler.append(w.score) }
            }
        }
        XCTAssertGreaterThan(classWords.reduce(0, +) / Float(classWords.count), filler.reduce(0, +) / Float(filler.count))
    }

    /// The attribution of token t is ∂f/∂eₜ · wₜ: check it against a central
    /// difference along the token's word embedding (f = log p of the predicted class).
    func testExplanationMatchesFiniteDifference() throws {
        let model = try FineTunedModel(folder: try trainedCheckpoint())
        let text = "tok1 tok22 tok13"
        let explanation = try model.explain([text])[0]
        let ids = model.encode([text])[0]
        let H = model.model.config.hiddenSize
        let word = model.model.parameters.view("bert.embeddings.word_embeddings.weight")
        let target = model.labels.firstIndex(of: explanation.output)!
        func f() -> Double {
            let z = BatchedInference(model: model.model, batchSize: 1, maxLength: 24).logits([ids])[0]
            return log(Double(Evaluation.softmax(z)[target]))
        }
        for t in 1...3 {
            let row = Int(ids[t]) * H
            let saved = word.slice(row, H).array
            let eps: Float = 1e-2
            for j in 0..<H { word[row + j] = saved[j] * (1 + eps) }
            let up = f()
            for j in 0..<H { word[row + j] = saved[j] * (1 - eps) }
            let down = f()
            for j in 0..<H { word[row + j] = saved[j] }
            let numeric = (up - down) / (2 * Double(eps))
            XCTAssertEqual(Double(explanation.tokens[t].score), numeric, accuracy: 1e-3 + 0.02 * abs(numeric), "token \(t)")
        }
    }

    func testMergeWordPieces() {
        let pieces = [("[CLS]", 1), ("play", 2), ("##ing", 3), ("ball", 4), ("[SEP]", 5)].map { TokenScore(token: $0.0, score: Float($0.1)) }
        let words = FineTunedModel.mergeWords(pieces, specials: ["[CLS]", "[SEP]", "[PAD]"])
        XCTAssertEqual(words, [TokenScore(token: "playing", score: 5), TokenScore(token: "ball", score: 4)])
    }

    func testTextInputFromPlainAndCSV() throws {
        let dir = try TestFiles.temporaryDirectory()
        let plain = dir.appendingPathComponent("texts.txt")
        try "\u{FEFF}first\n\nsecond\r\n".write(to: plain, atomically: true, encoding: .utf8)
        XCTAssertEqual(try TextInput.read(file: plain, textColumn: "text").map(\.text), ["first", "second"])
        XCTAssertEqual(try TextInput.read(file: plain, textColumn: "text").map(\.line), [1, 3])
        let csv = dir.appendingPathComponent("texts.csv")
        try "id,body\n1,\"multi\nline\"\n2,two\n".write(to: csv, atomically: true, encoding: .utf8)
        XCTAssertEqual(try TextInput.read(file: csv, textColumn: "body").map(\.text), ["multi\nline", "two"])
    }

    func testNPYHeader() throws {
        let data = NPY.encode([[1, 2, 3], [4, 5, 6]])
        XCTAssertEqual(Array(data.prefix(8)), [0x93] + Array("NUMPY".utf8) + [1, 0])
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        XCTAssertEqual((10 + headerLength) % 64, 0)
        let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"))
        XCTAssertTrue(header.hasSuffix("\n"))
        XCTAssertEqual(data.count, 10 + headerLength + 24)
        let last = data.suffix(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        XCTAssertEqual(Float(bitPattern: UInt32(littleEndian: last)), 6)
    }

    /// all-MiniLM-L6-v2 embeddings match sentence-transformers (Tests/Fixtures/make_embedding_fixture.py).
    func testEmbeddingsMatchSentenceTransformers() throws {
        let folder = try TestFiles.defaultModel()
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: TestFiles.fixtures.appendingPathComponent("embeddings/expected.json"))) as! [String: Any]
        let sentences = fixture["sentences"] as! [String]
        let expected = (fixture["embeddings"] as! [[Double]]).map { $0.map(Float.init) }
        let embedder = try Embedder(folder: folder)
        XCTAssertTrue(embedder.normalize)
        XCTAssertEqual(embedder.maxLength, fixture["max_seq_length"] as? Int)
        let vectors = embedder.embed(sentences, batchSize: 3)
        XCTAssertEqual(vectors.count, expected.count)
        var worst: Float = 0
        for (v, e) in zip(vectors, expected) {
            XCTAssertEqual(v.count, e.count)
            for (a, b) in zip(v, e) { worst = max(worst, abs(a - b)) }
        }
        XCTAssertLessThan(worst, 1e-4, "largest difference \(worst)")
    }
}
