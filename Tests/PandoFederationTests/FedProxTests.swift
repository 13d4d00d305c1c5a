import Foundation
import PandoEngine
@testable import PandoFederation
import XCTest

final class FedProxTests: XCTestCase {
    /// One FineTuner step with FedProx's μ has exactly μ·(w − anchor) more gradient than without.
    func testProximalTermAddsMuTimesDistanceToTheGradient() throws {
        let folder = Fixtures.root.appendingPathComponent("tiny/softmax")
        let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["0", "1", "2"])
        let (plain, _) = try BertModel.load(from: folder, head: head)
        let (prox, _) = try BertModel.load(from: folder, head: head)
        let batch = Fixtures.packedBatch(try Fixtures.json("tiny/inputs.json"))
        let labels = try Fixtures.json("tiny/softmax/case.json")["labels"] as! [Int]
        var settings = FineTuner.Settings()
        settings.maxGradientNorm = nil   // clipping would rescale the sum
        settings.dropout = false
        settings.learningRate = 1e-3
        let capacity = BatchCapacity(sequences: batch.count, length: batch.maxLength)
        let a = FineTuner(model: plain, capacity: capacity, settings: settings)
        let b = FineTuner(model: prox, capacity: capacity, settings: settings)
        // An anchor away from the weights: w − anchor varies per element.
        let anchor = prox.parameters.copy()
        for i in 0..<anchor.buffer.count { anchor.buffer[i] += 0.01 * Float(i % 13 - 6) }
        let mu: Float = 0.1
        b.proximal = (anchor, mu)
        let weights = prox.parameters.buffer.array
        let ra = a.step(batch, targets: .classes(labels))
        let rb = b.step(batch, targets: .classes(labels))
        XCTAssertEqual(ra.loss, rb.loss, "the proximal term changes gradients, not the reported loss")
        let ga = a.gradients.buffer.array, gb = b.gradients.buffer.array
        var worst: Float = 0
        for i in ga.indices {
            let expected = mu * (weights[i] - anchor.buffer[i])
            worst = max(worst, abs((gb[i] - ga[i]) - expected))
        }
        XCTAssertLessThan(worst, 1e-6)
        XCTAssertNotEqual(plain.parameters.buffer.array, prox.parameters.buffer.array, "the updates differ")
    }
}
