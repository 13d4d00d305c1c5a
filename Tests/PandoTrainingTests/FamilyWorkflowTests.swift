import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
import PandoText
@testable import PandoTraining
import XCTest

/// Training, prediction and embedding end to end on tiny random RoBERTa and DistilBERT
/// encoders (Tests/Fixtures/families/*_encoder, made by make_family_fixtures.py with the
/// byte-level BPE and cased WordPiece tokenizer fixtures beside them).
final class FamilyWorkflowTests: XCTestCase {
    static let folders = ["roberta_encoder", "distilbert_encoder"]

    /// A keyword task a small encoder learns in a few epochs: the label is which of two word
    /// sets the text draws its sentiment words from, among shared filler words.
    func keywordRows(count: Int, seed: UInt64) -> [(text: String, label: String)] {
        var rng = SplitMix64(seed: seed)
        let positive = ["good", "great", "happy", "love", "nice"], negative = ["bad", "awful", "sad", "hate", "poor"]
        let filler = ["the", "students", "class", "today", "was", "and", "what", "book", "school", "really"]
        return (0..<count).map { i in
            let isPositive = i % 2 == 0
            var words: [String] = []
            for _ in 0..<(3 + Int(rng.next() % 5)) { words.append(filler[Int(rng.next() % UInt64(filler.count))]) }
            let set = isPositive ? positive : negative
            for _ in 0..<2 { words.insert(set[Int(rng.next() % UInt64(set.count))], at: Int(rng.next() % UInt64(words.count + 1))) }
            return (words.joined(separator: " "), isPositive ? "pos" : "neg")
        }
    }

    func testTrainPredictAndReloadEachFamily() throws {
        for name in Self.folders {
            let folder = TestFixtures.url("families/\(name)")
            let output = try TestFixtures.temporaryDirectory(prefix: "pando-\(name)").appendingPathComponent("out")
            let train = try dataset(keywordRows(count: 240, seed: 1), labels: ["neg", "pos"])
            let validation = try dataset(keywordRows(count: 80, seed: 2), labels: ["neg", "pos"])
            var options = quickOptions(epochs: 6)
            options.learningRate = 3e-3
            let trainer = try Trainer(baseModel: folder, task: .classification, labels: train.labels, options: options)
            XCTAssertEqual(trainer.model.config.family.rawValue, name.replacingOccurrences(of: "_encoder", with: ""))
            _ = try trainer.run(train: train, validation: validation, output: output)

            // The folder is the family's: config, tokenizer files beside the weights.
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: output.appendingPathComponent("config.json"))) as! [String: Any]
            XCTAssertEqual(config["architectures"] as? [String], [trainer.model.config.family.sequenceClassifier], name)
            let tokenizerFiles = name.hasPrefix("roberta") ? ["vocab.json", "merges.txt"] : ["vocab.txt"]
            for file in tokenizerFiles + ["tokenizer_config.json"] {
                XCTAssertTrue(FileManager.default.fileExists(atPath: output.appendingPathComponent(file).path), "\(name): \(file)")
            }

            let model = try FineTunedModel(folder: output)
            let metrics = try model.evaluate(try dataset(keywordRows(count: 80, seed: 3), labels: ["neg", "pos"]))
            let accuracy = try XCTUnwrap(metrics.summary["accuracy"])
            XCTAssertGreaterThan(accuracy, 0.9, "\(name) learns the keyword task (accuracy \(accuracy))")
            let texts = ["the class was great and happy", "awful and sad today", "what book school really"]
            let predictions = model.predict(texts)
            XCTAssertEqual(predictions.prefix(2).map(\.label), ["pos", "neg"], name)

            // int8: the family's names in the int8 file, the same predictions after loading it,
            // and close to float32 (DistilBERT's int8 embeddings run without a token-type table).
            model.model.quantizeForInference()
            let quantized = model.predict(texts)
            for (q, f) in zip(quantized, predictions) {
                for (a, b) in zip(q.probabilities!, f.probabilities!) { XCTAssertEqual(a, b, accuracy: 0.05, "\(name) int8 vs float32") }
            }
            let int8Folder = output.deletingLastPathComponent().appendingPathComponent("int8")
            try model.model.saveInt8(to: int8Folder, copying: (BertTokenizer.folderFiles + ["pando-training.json"])
                .map { output.appendingPathComponent($0) }.filter { FileManager.default.fileExists(atPath: $0.path) })
            let int8 = try FineTunedModel(folder: int8Folder)
            XCTAssertEqual(int8.predict(texts).map(\.probabilities), quantized.map(\.probabilities), name)
        }
    }

    /// `pando embed` on each encoder folder gives transformers' mean-pooled last hidden state,
    /// tokenized by each folder's own files.
    func testEmbeddingsMatchTransformers() throws {
        let reference = try TestFixtures.json("families/encoder_embeddings.json")
        let sentences = reference["sentences"] as! [String]
        for name in Self.folders {
            let r = reference[name] as! [String: Any]
            let embedder = try Embedder(folder: TestFixtures.url("families/\(name)"), normalize: false)
            let mask = r["attention_mask"] as! [[Int]]
            let expectedIDs = zip(r["input_ids"] as! [[Int]], mask).map { ids, m in zip(ids, m).filter { $0.1 == 1 }.map { Int32($0.0) } }
            XCTAssertEqual(sentences.map { embedder.tokenizer.encode($0).ids }, expectedIDs, "\(name) token ids")
            let vectors = embedder.embed(sentences)
            let expected = r["mean_pooled"] as! [[Double]]
            var worst: Float = 0
            for (v, e) in zip(vectors, expected) {
                for (a, b) in zip(v, e) { worst = max(worst, abs(a - Float(b))) }
            }
            XCTAssertLessThan(worst, 1e-4, "\(name) mean pooled")
        }
    }
}
