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
}
