import Foundation
import XCTest
@testable import PandoEngine

/// DP-SGD's per-example clipping against Opacus (made by Tests/Fixtures/privacy/make_opacus_fixture.py):
/// on the tiny softmax model and the four sequences of tiny/inputs.json, each example's gradient
/// norm over the trained tensors and the clipped sum Σᵢ min(1, C/(‖gᵢ‖+1e-6))·gᵢ, with every
/// parameter trained and with the embeddings frozen. Reference computed in float64.
final class OpacusParityTests: XCTestCase {
    func testClippedGradientsMatchOpacus() throws {
        let info = try Fixture.json("privacy/opacus_tiny.json")
        let reference = try SafeTensors.File(url: Fixture.url("privacy/opacus_tiny.safetensors"))
        let inputs = try Fixture.json("tiny/inputs.json")
        let labels = info["labels"] as! [Int]
        let cases = info["cases"] as! [String: Any]
        XCTAssertEqual(Set(cases.keys), ["all", "frozen_embeddings"])
        var compared = 0

        for caseName in cases.keys.sorted() {
            let entry = cases[caseName] as! [String: Any]
            let (model, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
            let trained = entry["trained"] as! [String]
            let frozen = Set(model.layout.tensors.map(\.name)).subtracting(trained)
            let prefix = entry["frozen_prefix"] as? String
            XCTAssertEqual(frozen, Set(model.layout.tensors.map(\.name).filter { prefix != nil && $0.hasPrefix(prefix!) }),
                           "\(caseName): the fixture's trained tensors are the layout less the frozen prefix")
            let C = Float(entry["max_gradient_norm"] as! Double)

            let batch = Fixture.packedBatch(inputs)
            XCTAssertEqual(batch.count, labels.count)
            let capacity = BatchCapacity(sequences: batch.count, length: batch.maxLength, tokens: batch.tokenCount)
            let ws = BertWorkspace(model: model, capacity: capacity, training: true)
            let norms = ExampleGradientNorms(model: model, frozen: frozen, capacity: capacity)
            let got = ParameterBuffer(layout: model.layout)
            let result = model.clippedGradients(batch, targets: .classes(labels), workspace: ws, norms: norms,
                                                maxGradientNorm: C, gradients: got, dropout: nil)

            let expectedNorms = try reference.floats("\(caseName)/norms")
            XCTAssertEqual(result.norms.count, expectedNorms.count)
            var worstNorm = 0.0
            for (b, expected) in expectedNorms.enumerated() {
                let relative = abs(result.norms[b] - Double(expected)) / Double(expected)
                worstNorm = max(worstNorm, relative)
                XCTAssertLessThan(relative, 1e-4, "\(caseName): norm of example \(b) is \(result.norms[b]), Opacus \(expected)")
            }

            var worst: (diff: Float, scale: Float, name: String) = (0, 0, "")
            var checked = 0
            for spec in model.layout.tensors where !frozen.contains(spec.name) {
                let key = "\(caseName)/\(spec.name)"
                guard reference.entries[key] != nil else { XCTFail("\(key) missing from the fixture"); continue }
                let (diff, scale) = maxDifference(got.view(spec).array, try reference.floats(key))
                XCTAssertLessThan(diff, 1e-5 * max(1, scale), "\(caseName): \(spec.name) clipped sum differs by \(diff) (largest element \(scale))")
                if diff / max(1, scale) > worst.diff / max(1, worst.scale) { worst = (diff, scale, spec.name) }
                checked += 1
            }
            XCTAssertEqual(checked, trained.count, "\(caseName): every trained tensor compared")
            // The fixture holds the norms and exactly the trained tensors of this case.
            XCTAssertEqual(reference.entries.keys.filter { $0.hasPrefix("\(caseName)/") }.count, trained.count + 1)
            print("OpacusParity \(caseName): C \(C), norms \(result.norms.map { String(format: "%.6f", $0) }), "
                  + "worst relative norm error \(worstNorm), worst clipped-sum error \(worst.diff) in \(worst.name) (scale \(worst.scale)), \(checked) tensors")
            compared += checked
        }
        XCTAssertGreaterThan(compared, 0)
    }
}
