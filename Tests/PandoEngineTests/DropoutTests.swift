import Foundation
import XCTest
@testable import PandoEngine

/// Dropout paths have no PyTorch fixture (the masks differ by construction),
/// so their backward pass is checked against finite differences with a
/// fixed mask, and reproducibility is checked directly.
final class DropoutTests: XCTestCase {
    /// A tiny fixture model (BERT by default; `families/…` for DistilBERT and RoBERTa,
    /// whose heads have their own dropout sites) with dropout 0.1 everywhere.
    func tinyModelWithDropout(_ path: String = "tiny/softmax") throws -> BertModel {
        let (base, _) = try BertModel.load(from: Fixture.url(path), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        var config = base.config
        config.hiddenDropout = 0.1
        config.attentionDropout = 0.1
        config.classifierDropout = 0.1
        let model = BertModel(config: config, head: base.head)
        model.parameters.buffer.copy(from: base.parameters.buffer)
        return model
    }

    func testBackwardWithDropoutMatchesFiniteDifferences() throws {
        try checkDropoutGradients("tiny/softmax", inputs: "tiny/inputs.json")
    }

    func testDistilBERTAndRoBERTaBackwardWithDropoutMatchesFiniteDifferences() throws {
        try checkDropoutGradients("families/distilbert_softmax", inputs: "families/inputs.json")
        try checkDropoutGradients("families/roberta_softmax", inputs: "families/inputs.json")
    }

    func checkDropoutGradients(_ path: String, inputs: String) throws {
        let model = try tinyModelWithDropout(path)
        let batch = Fixture.packedBatch(try Fixture.json(inputs))
        let targets = Targets.classes([0, 2, 1, 2])
        let key = DropoutKey(seed: 3, step: 5)
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: true)
        let grads = ParameterBuffer(layout: model.layout)
        _ = model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: grads, dropout: key)

        func loss() -> Double {
            model.forward(batch, workspace: ws, dropout: key)
            return Double(model.loss(targets, batch: batch, workspace: ws))
        }
        var checked = 0
        for spec in model.layout.tensors {
            let g = grads.view(spec), p = model.parameters.view(spec)
            // The element with the largest gradient in each tensor.
            var best = 0
            for i in 0..<g.count where abs(g[i]) > abs(g[best]) { best = i }
            guard abs(g[best]) > 1e-2 else { continue }
            let original = p[best], h: Float = 1e-2
            p[best] = original + h
            let up = loss()
            p[best] = original - h
            let down = loss()
            p[best] = original
            let numeric = Float((up - down) / (2 * Double(h)))
            XCTAssertEqual(numeric, g[best], accuracy: 2e-2 * abs(g[best]) + 2e-3, "\(path): \(spec.name)[\(best)]")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 30, "most tensors have a checkable gradient")
    }

    func testSameSeedReproducesStepsAndAnotherSeedDoesNot() throws {
        let batch = Fixture.packedBatch(try Fixture.json("tiny/inputs.json"))
        func run(seed: UInt64) throws -> [Float] {
            let model = try tinyModelWithDropout()
            var settings = FineTuner.Settings()
            settings.seed = seed
            settings.learningRate = 1e-3
            let tuner = FineTuner(model: model, capacity: BatchCapacity(sequences: 4, length: 11), settings: settings)
            for _ in 0..<3 { tuner.step(batch, targets: .classes([0, 2, 1, 2])) }
            return model.parameters.buffer.array
        }
        let a = try run(seed: 1), b = try run(seed: 1), c = try run(seed: 2)
        XCTAssertEqual(a, b, "same seed, same weights bit for bit")
        XCTAssertNotEqual(a, c, "another seed draws other masks")
    }

    func testMaskDropsTheRequestedFractionAndRescales() {
        let mask = DropoutMask(probability: 0.25, key: CounterRandom.key(9, 1, 2))
        let n = 200_000
        let storage = FloatStorage(count: n)
        storage.buffer.fill(1)
        mask.apply(storage.buffer.base, count: n)
        let zeros = storage.buffer.array.filter { $0 == 0 }.count
        XCTAssertEqual(Double(zeros) / Double(n), 0.25, accuracy: 0.005)
        XCTAssertEqual(storage.buffer.array.first { $0 != 0 }, 1 / 0.75)
    }
}
