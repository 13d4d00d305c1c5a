import Foundation
import XCTest
@testable import PandoEngine

/// Forward and backward agreement with PyTorch + transformers on committed fixtures.
final class ParityTests: XCTestCase {
    /// all-MiniLM-L6-v2's last hidden state, pooler output and mean pooling
    /// on five sentences, against PyTorch float32.
    func testMiniLMHiddenStateMatchesPyTorch() throws {
        let folder = try Fixture.defaultModel()
        let inputs = try Fixture.json("minilm/inputs.json")
        let reference = try SafeTensors.File(url: Fixture.url("minilm/outputs.safetensors"))
        let (model, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
        let batch = Fixture.packedBatch(inputs)
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: false)
        let hidden = model.encode(batch, workspace: ws).array
        let expected = try reference.floats("last_hidden_state")
        let T = reference.entries["last_hidden_state"]!.shape[1], H = model.config.hiddenSize
        var worst: Float = 0
        var token = 0
        for (b, length) in batch.lengths.enumerated() {
            for t in 0..<length {
                for j in 0..<H { worst = max(worst, abs(hidden[token * H + j] - expected[(b * T + t) * H + j])) }
                token += 1
            }
        }
        XCTAssertLessThan(worst, 1e-4, "last_hidden_state max abs error")

        let pooler = model.pool(batch, workspace: ws, pooling: .pooler).array
        XCTAssertLessThan(maxDifference(pooler, try reference.floats("pooler_output")).diff, 1e-4, "pooler_output")
        let mean = model.pool(batch, workspace: ws, pooling: .mean).array
        XCTAssertLessThan(maxDifference(mean, try reference.floats("mean_pooled")).diff, 1e-4, "mean pooled")
    }

    /// Loss and the gradient of every parameter for a small random BERT,
    /// for each head kind, against PyTorch float64.
    func testGradientsMatchPyTorchForEveryHead() throws {
        let inputs = try Fixture.json("tiny/inputs.json")
        let batch = Fixture.packedBatch(inputs)
        for name in ["softmax", "softmax_weighted", "multilabel", "regression", "softmax_meanpool", "multilabel_weighted"] {
            let info = try Fixture.json("tiny/\(name)/case.json")
            let outputs = info["num_labels"] as! Int
            let pooling = Pooling(rawValue: info["pooling"] as! String)!
            let objective: Objective
            let targets: Targets
            switch info["head"] as! String {
            case "softmax":
                objective = .softmaxCrossEntropy
                targets = .classes(info["labels"] as! [Int])
            case "multilabel":
                objective = .sigmoidBinaryCrossEntropy
                targets = .multiHot((info["labels"] as! [[Double]]).flatMap { $0.map(Float.init) })
            default:
                objective = .meanSquaredError
                targets = .scores((info["labels"] as! [Double]).map(Float.init))
            }
            let labels = (0..<outputs).map { "l\($0)" }
            let (model, report) = try BertModel.load(from: Fixture.url("tiny/\(name)"), head: ClassifierHead(objective: objective, labels: labels, pooling: pooling))
            XCTAssertEqual(report.initialized, [], name)
            let weights = (info["class_weights"] as? [Double])?.map(Float.init)
            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: true)
            let grads = ParameterBuffer(layout: model.layout)
            let loss = model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: grads, dropout: nil, classWeights: weights)
            let expectedLoss = Float(info["loss"] as! Double)
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * max(1, abs(expectedLoss)), "\(name) loss")

            let reference = try SafeTensors.File(url: Fixture.url("tiny/\(name)/grads.safetensors"))
            var checked = 0
            for spec in model.layout.tensors {
                let expected = try reference.floats(spec.name)
                let (diff, scale) = maxDifference(grads.view(spec).array, expected)
                // Relative to the tensor's largest gradient; float32 against float64. The
                // floor covers tensors whose exact gradient is zero (the key bias: softmax
                // is shift-invariant), where float32 leaves rounding noise.
                XCTAssertLessThanOrEqual(diff, 2e-5 * max(scale, 1e-2), "\(name): \(spec.name) max error \(diff) at scale \(scale)")
                checked += 1
            }
            XCTAssertEqual(checked, reference.entries.count, "\(name): every reference gradient checked")
        }
    }

    /// 300 AdamW steps with warm-up, decay, clipping and no decay on biases
    /// and LayerNorm follow PyTorch's loss curve and end at its parameters.
    func testAdamWTrajectoryFollowsPyTorch() throws {
        let trajectory = try Fixture.json("adamw/trajectory.json")
        let inputs = try Fixture.json("tiny/inputs.json")
        let batch = Fixture.packedBatch(inputs)
        let labels = trajectory["labels"] as! [Int]
        let steps = trajectory["steps"] as! Int
        let (model, _) = try BertModel.load(from: Fixture.url("adamw"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c", "d"]))
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 4, length: 11), training: true)
        let grads = ParameterBuffer(layout: model.layout)
        let optimizer = AdamW(layout: model.layout, settings: .init(weightDecay: Float(trajectory["weight_decay"] as! Double)))
        let schedule = LearningRateSchedule.linear(warmupSteps: trajectory["warmup"] as! Int, totalSteps: steps)
        let expectedLosses = (trajectory["losses"] as! [Double]).map(Float.init)
        let expectedNorms = (trajectory["grad_norms"] as! [Double]).map(Float.init)
        let lr = Float(trajectory["lr"] as! Double)
        var worstLoss: Float = 0, worstNorm: Float = 0
        for step in 0..<steps {
            grads.zero()
            let loss = model.lossAndGradients(batch, targets: .classes(labels), workspace: ws, gradients: grads, dropout: nil)
            let norm = GradientClipping.clip(grads, maxNorm: Float(trajectory["clip"] as! Double))
            optimizer.update(model.parameters, gradients: grads, learningRate: lr * schedule.factor(at: step))
            worstLoss = max(worstLoss, abs(loss - expectedLosses[step]))
            worstNorm = max(worstNorm, abs(norm - expectedNorms[step]) / expectedNorms[step])
        }
        XCTAssertLessThan(worstLoss, 1e-4, "largest loss deviation over \(steps) steps")
        XCTAssertLessThan(worstNorm, 1e-4, "largest relative gradient-norm deviation")
        let final = try SafeTensors.File(url: Fixture.url("adamw/final.safetensors"))
        // The key bias is skipped: its exact gradient is zero (softmax is shift-invariant),
        // so Adam normalises float32 rounding noise into full-size steps, as PyTorch
        // float32 would; the reference was computed in float64. It cannot affect the loss.
        for spec in model.layout.tensors where !spec.name.hasSuffix("attention.self.key.bias") {
            let (diff, scale) = maxDifference(model.parameters.view(spec).array, try final.floats(spec.name))
            XCTAssertLessThan(diff, 1e-4 * max(scale, 1), "final \(spec.name)")
        }
    }
}
