import Foundation
import XCTest
@testable import PandoEngine

final class CheckpointTests: XCTestCase {
    let head3 = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["neg", "neu", "pos"])

    func testSaveThenLoadRestoresEveryParameterAndTheHead() throws {
        let (model, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: head3)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try model.save(to: dir)
        let (reloaded, report) = try BertModel.load(from: dir)
        XCTAssertEqual(reloaded.head, head3, "head read back from id2label/problem_type")
        XCTAssertEqual(report.initialized, [])
        XCTAssertEqual(reloaded.parameters.buffer.array, model.parameters.buffer.array)
        // Hugging Face keys Pando does not model survive the round trip.
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: Any]
        XCTAssertEqual(config["initializer_range"] as? Double, 0.2)
        XCTAssertEqual(config["architectures"] as? [String], ["BertForSequenceClassification"])
        XCTAssertEqual(config["problem_type"] as? String, "single_label_classification")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [], "atomic writes leave no temporary files")
    }

    func testRegressionAndMultiLabelHeadsRoundTrip() throws {
        for head in [ClassifierHead(objective: .meanSquaredError, labels: ["score"], pooling: .mean),
                     ClassifierHead(objective: .sigmoidBinaryCrossEntropy, labels: ["a", "b", "c", "d"], pooling: .cls)] {
            let (model, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: head)
            let dir = try makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(at: dir) }
            try model.save(to: dir)
            XCTAssertEqual(try BertModel.load(from: dir).0.head, head)
        }
    }

    func testNamesWithoutTheBertPrefixLoadTheSame() throws {
        let (model, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: head3)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Fixture.url("tiny/softmax/config.json"), to: dir.appendingPathComponent("config.json"))
        let tensors = model.layout.tensors.filter { $0.name.hasPrefix("bert.") }.map {
            SafeTensors.Tensor(name: String($0.name.dropFirst(5)), shape: $0.shape, values: model.parameters.view($0))
        }
        try SafeTensors.write(tensors, to: dir.appendingPathComponent("model.safetensors"))
        let (plain, report) = try BertModel.load(from: dir, head: head3)
        XCTAssertEqual(report.initialized, ["classifier.weight", "classifier.bias"], "an encoder-only checkpoint gets a fresh head")
        let encoder = model.layout.tensors.filter { $0.name.hasPrefix("bert.") }
        for spec in encoder { XCTAssertEqual(plain.parameters.view(spec).array, model.parameters.view(spec).array, spec.name) }
    }

    func testMissingTensorIsNamed() throws {
        let dir = try writeVariant { tensors in tensors.removeAll { $0.name == "bert.encoder.layer.1.intermediate.dense.weight" } }
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try BertModel.load(from: dir, head: head3)) { error in
            XCTAssertTrue("\(error)".contains("'bert.encoder.layer.1.intermediate.dense.weight' is missing"), "\(error)")
            XCTAssertTrue("\(error)".contains("model.safetensors"), "\(error)")
        }
    }

    func testMisshapedTensorNamesBothShapes() throws {
        let dir = try writeVariant { tensors in
            let i = tensors.firstIndex { $0.name == "bert.encoder.layer.0.attention.self.query.weight" }!
            let t = tensors[i]
            tensors[i] = SafeTensors.Tensor(name: t.name, shape: [t.shape[0] / 2, t.shape[1] * 2], dtype: t.dtype, bytes: t.bytes)
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try BertModel.load(from: dir, head: head3)) { error in
            XCTAssertTrue("\(error)".contains("has shape [16, 64], expected [32, 32]"), "\(error)")
        }
    }

    func testHalfPrecisionTensorsAreConverted() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let values: [Float] = [0, 1, -2.5, 0.333, 65504, -1e-3]
        var data = Data()
        var header: [String: Any] = [:]
        var offset = 0
        for (name, bits) in [("f16", values.map { Float16($0).bitPattern }),
                             ("bf16", values.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) })] {
            header[name] = ["dtype": name.uppercased(), "shape": [2, 3], "data_offsets": [offset, offset + 12]]
            for b in bits { withUnsafeBytes(of: b.littleEndian) { data.append(contentsOf: $0) } }
            offset += 12
        }
        let json = try JSONSerialization.data(withJSONObject: header)
        var file = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        file.append(data)
        let url = dir.appendingPathComponent("half.safetensors")
        try file.write(to: url)
        let st = try SafeTensors.File(url: url)
        let f16 = try st.floats("f16"), bf16 = try st.floats("bf16")
        for (i, v) in values.enumerated() {
            XCTAssertEqual(f16[i], Float(Float16(v)))
            XCTAssertEqual(bf16[i], Float(bitPattern: v.bitPattern & 0xFFFF_0000))
        }
    }

    func testCorruptFilesGiveErrorsNamingTheFile() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: Fixture.url("tiny/softmax/config.json"), to: dir.appendingPathComponent("config.json"))
        let weights = try Data(contentsOf: Fixture.url("tiny/softmax/model.safetensors"))
        let url = dir.appendingPathComponent("model.safetensors")
        try weights.prefix(weights.count - 100).write(to: url)
        XCTAssertThrowsError(try BertModel.load(from: dir, head: head3)) { error in
            XCTAssertTrue("\(error)".contains(url.path) && "\(error)".contains("byte range"), "\(error)")
        }
        try Data([1, 2, 3]).write(to: url)
        XCTAssertThrowsError(try BertModel.load(from: dir, head: head3)) { error in
            XCTAssertTrue("\(error)".contains("too short"), "\(error)")
        }
        try FileManager.default.removeItem(at: url)
        XCTAssertThrowsError(try BertModel.load(from: dir, head: head3)) { error in
            XCTAssertTrue("\(error)".contains("model.safetensors") && "\(error)".contains("missing"), "\(error)")
        }
    }

    func testConfigErrorsNameTheField() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("config.json")
        // DistilBERT is read with its own key names; an unknown architecture is refused.
        try #"{"model_type": "distilbert", "vocab_size": 10}"#.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertConfig(contentsOf: url)) { XCTAssertTrue("\($0)".contains("'dim'"), "\($0)") }
        try #"{"model_type": "xlnet", "vocab_size": 10}"#.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertConfig(contentsOf: url)) { XCTAssertTrue("\($0)".contains("'model_type'") && "\($0)".contains("distilbert, roberta"), "\($0)") }
        try #"{"vocab_size": 10, "hidden_size": 30, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8}"#.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertConfig(contentsOf: url)) { XCTAssertTrue("\($0)".contains("not divisible"), "\($0)") }
        try #"{"vocab_size": 10, "hidden_size": "big"}"#.write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertConfig(contentsOf: url)) { XCTAssertTrue("\($0)".contains("'hidden_size'"), "\($0)") }
        try "{not json".write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try BertConfig(contentsOf: url)) { XCTAssertTrue("\($0)".contains(url.path), "\($0)") }
    }

    /// Copies the tiny model into a new folder after editing its tensor list.
    private func writeVariant(_ edit: (inout [SafeTensors.Tensor]) -> Void) throws -> URL {
        let (model, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: head3)
        let dir = try makeTemporaryDirectory()
        try FileManager.default.copyItem(at: Fixture.url("tiny/softmax/config.json"), to: dir.appendingPathComponent("config.json"))
        var tensors = model.layout.tensors.map { SafeTensors.Tensor(name: $0.name, shape: $0.shape, values: model.parameters.view($0)) }
        edit(&tensors)
        try SafeTensors.write(tensors, to: dir.appendingPathComponent("model.safetensors"))
        return dir
    }
}
