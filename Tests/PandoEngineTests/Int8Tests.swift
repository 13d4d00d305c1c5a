import CPandoKernels
import Foundation
import PandoData
@testable import PandoEngine
import PandoTestSupport
import XCTest

final class Int8Tests: XCTestCase {
    /// The int8 GEMM equals an exact integer reference computed here, on odd shapes that
    /// exercise every padding and tail path, with the VNNI kernel and the portable one.
    func testInt8GemmMatchesExactIntegerArithmetic() {
        var rng = SplitMix64(seed: 3)
        func uniform() -> Float { Float(rng.next() % 20_001) / 10_000 - 1 }
        for (m, n, k) in [(37, 45, 70), (9, 32, 4), (64, 1152, 384), (3, 7, 1)] {
            let x = (0..<(m * k)).map { _ in uniform() }
            let w = (0..<(n * k)).map { _ in uniform() * 0.2 }
            let bias = (0..<n).map { _ in uniform() }
            let linear = w.withUnsafeBufferPointer { Int8Linear(weight: $0.baseAddress!, outputs: n, inputs: k) }
            let scratch = Int8Scratch(rows: m, widestInput: k)
            // Exact reference from the same quantization rules.
            var expected = [Float](repeating: 0, count: m * n)
            for r in 0..<m {
                let rowMax = (0..<k).map { abs(x[r * k + $0]) }.max()!
                let rs = rowMax > 0 ? rowMax / 127 : 1
                let qx = (0..<k).map { max(-127, min(127, Int((x[r * k + $0] * (1 / rs)).rounded(.toNearestOrEven)))) }
                for j in 0..<n {
                    let colMax = (0..<k).map { abs(w[j * k + $0]) }.max()!
                    let ws = colMax > 0 ? colMax / 127 : 1
                    var acc = 0
                    for i in 0..<k { acc += qx[i] * max(-127, min(127, Int((w[j * k + i] / ws).rounded(.toNearestOrEven)))) }
                    expected[r * n + j] = rs * ws * Float(acc) + bias[j]
                }
            }
            for portable in [false, true] {
                pando_q8_force_portable(portable ? 1 : 0)
                defer { pando_q8_force_portable(0) }
                var y = [Float](repeating: .nan, count: m * n)
                x.withUnsafeBufferPointer { xp in
                    bias.withUnsafeBufferPointer { bp in
                        y.withUnsafeMutableBufferPointer { yp in
                            linear.apply(xp.baseAddress!, rows: m, bias: bp.baseAddress!, into: yp.baseAddress!, scratch: scratch)
                        }
                    }
                }
                var worst: Float = 0
                for i in 0..<(m * n) { worst = max(worst, abs(y[i] - expected[i]) / max(1, abs(expected[i]))) }
                XCTAssertLessThan(worst, 1e-5, "\(m)×\(n)×\(k), \(portable ? "portable" : Int8Linear.kernel)")
            }
        }
    }

    /// The int8 encoder's logits stay close to float32's on MiniLM and real sentences.
    func testInt8EncoderTracksFloat32OnMiniLM() throws {
        let folder = try TestFixtures.defaultModel()
        let (model, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: .mean), seed: 1)
        let inputs = try TestFixtures.json("minilm/inputs.json")
        let batch = TestFixtures.packedBatch(inputs)
        func run() -> [Float] {
            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: false)
            return model.encode(batch, workspace: ws).array
        }
        let reference = run()
        model.quantizeForInference()
        let quantized = run()
        model.dropQuantization()
        XCTAssertEqual(run(), reference, "dropping the int8 encoder restores float32 exactly")
        var dot = 0.0, a = 0.0, b = 0.0
        for i in reference.indices { dot += Double(reference[i] * quantized[i]); a += Double(reference[i] * reference[i]); b += Double(quantized[i] * quantized[i]) }
        let cosine = dot / (a.squareRoot() * b.squareRoot())
        XCTAssertGreaterThan(cosine, 0.99, "hidden states of the int8 encoder follow float32 (cosine \(cosine))")
        XCTAssertNotEqual(quantized, reference, "the int8 path actually ran")
        print(String(format: "int8 (%@) vs float32 MiniLM last hidden state: cosine %.5f", Int8Linear.kernel, cosine))
    }

    /// A saved int8 checkpoint gives exactly the logits of the model it was quantized from,
    /// holds no float32 copy of the quantized tensors, and refuses to train.
    func testSavedInt8CheckpointRoundTripsAndIsInferenceOnly() throws {
        let folder = try TestFixtures.tinyModelFolder()
        let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"])
        let (model, _) = try BertModel.load(from: folder, head: head, seed: 3)
        let batch = TestFixtures.packedBatch(try TestFixtures.json("tiny/inputs.json"))
        func logits(_ m: BertModel) -> [Float] {
            let ws = BertWorkspace(model: m, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: false)
            return withExtendedLifetime(ws) { m.forward(batch, workspace: ws).array }
        }
        let float32 = logits(model)
        model.quantizeForInference()
        let expected = logits(model)
        XCTAssertNotEqual(expected, float32)
        let out = try TestFixtures.temporaryDirectory(prefix: "pando-int8").appendingPathComponent("q")
        try model.saveInt8(to: out, copying: [folder.appendingPathComponent("vocab.txt")])
        XCTAssertTrue(Int8Checkpoint.isInt8(out))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
        let file = try SafeTensors.File(url: out.appendingPathComponent(Int8Checkpoint.weightsFile))
        XCTAssertEqual(file.entries["bert.encoder.layer.0.attention.self.query.weight"]?.dtype, .i8)
        XCTAssertEqual(file.entries["bert.embeddings.word_embeddings.weight"]?.dtype, .i8)
        XCTAssertEqual(file.entries["bert.embeddings.position_embeddings.weight"]?.dtype, .f32)
        let (loaded, report) = try BertModel.load(from: out, head: nil)
        XCTAssertTrue(loaded.inferenceOnly)
        XCTAssertEqual(report.unused, [])
        XCTAssertEqual(report.initialized, [])
        XCTAssertEqual(logits(loaded), expected, "the int8 checkpoint computes exactly what the quantized model did")
        // The float32 slots of quantized tensors were never filled.
        XCTAssertEqual(loaded.parameters.values("bert.encoder.layer.1.intermediate.dense.weight").allSatisfy { $0 == 0 }, true)
    }

    /// On MiniLM the int8 checkpoint's quantized tensors (two thirds of the weights) never
    /// become resident: `mincore` finds their float32 pages untouched after loading.
    func testInt8CheckpointLeavesFloatSlotsNonResident() throws {
        let folder = try TestFixtures.defaultModel()
        let (model, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]), seed: 1)
        let out = try TestFixtures.temporaryDirectory(prefix: "pando-int8-minilm").appendingPathComponent("q")
        try model.saveInt8(to: out)
        let (loaded, _) = try BertModel.load(from: out, head: nil)
        let quantized = Int8Checkpoint.quantizedNames(layers: loaded.config.layers, family: loaded.config.family)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var resident = 0, pages = 0, floatBytes = 0
        for spec in loaded.layout.tensors where quantized.contains(spec.name) {
            let start = UInt(bitPattern: loaded.parameters.view(spec).base)
            let lo = (start + UInt(page) - 1) / UInt(page) * UInt(page), hi = (start + UInt(4 * spec.count)) / UInt(page) * UInt(page)
            guard hi > lo else { continue }
            let n = Int(hi - lo) / page
            var vec = [UInt8](repeating: 0, count: n)
            XCTAssertEqual(mincore(UnsafeMutableRawPointer(bitPattern: lo), Int(hi - lo), &vec), 0)
            resident += vec.filter { $0 & 1 == 1 }.count
            pages += n
            floatBytes += 4 * spec.count
        }
        print("int8 checkpoint: \(resident) of \(pages) float32 pages of quantized tensors resident (\(floatBytes >> 20) MB not held)")
        XCTAssertGreaterThan(pages, 10_000)
        XCTAssertEqual(resident, 0)
    }
}
