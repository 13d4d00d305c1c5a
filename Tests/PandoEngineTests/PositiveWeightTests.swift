import Foundation
@testable import PandoEngine
import XCTest

/// Multi-label binary cross-entropy with per-label positive weights
/// (`BCEWithLogitsLoss(pos_weight:)`; the model-level check against PyTorch is
/// `ParityTests`' multilabel_weighted case) and AdamW's per-tensor learning rates.
final class PositiveWeightTests: XCTestCase {
    /// The loss against its definition in double precision and its gradient against
    /// central differences, with soft targets and large logits (the overflow-free form).
    func testWeightedBinaryCrossEntropyMatchesDefinitionAndFiniteDifferences() {
        let rows = 3, columns = 4
        let z: [Float] = [0.3, -1.2, 2.5, -0.1, 40, -40, 0.0, 1.7, -3.1, 0.8, -60, 12]
        let y: [Float] = [1, 0, 1, 0, 0, 1, 0.25, 1, 0, 0.5, 1, 0]
        let w: [Float] = [3, 0.5, 7, 1]
        func reference(_ z: [Double]) -> Double {
            var total = 0.0
            for i in 0..<z.count {
                let p = Double(w[i % columns]), t = Double(y[i])
                let softplusMinus = max(-z[i], 0) + log1p(exp(-abs(z[i])))  // −log σ(z)
                let softplusPlus = max(z[i], 0) + log1p(exp(-abs(z[i])))    // −log(1 − σ(z))
                total += p * t * softplusMinus + (1 - t) * softplusPlus
            }
            return total / Double(z.count)
        }
        var d = [Float](repeating: .nan, count: z.count)
        let loss = z.withUnsafeBufferPointer { zp in
            d.withUnsafeMutableBufferPointer { dp in
                LossKernel.sigmoidBinaryCrossEntropy(logits: zp.baseAddress!, count: rows * columns, targets: y,
                                                     positiveWeights: w, dLogits: dp.baseAddress!)
            }
        }
        let zd = z.map(Double.init)
        XCTAssertEqual(Double(loss), reference(zd), accuracy: 1e-6 * reference(zd))
        for i in 0..<z.count {
            let h = 1e-5
            var plus = zd, minus = zd
            plus[i] += h; minus[i] -= h
            let numeric = (reference(plus) - reference(minus)) / (2 * h)
            XCTAssertEqual(Double(d[i]), numeric, accuracy: 1e-6 + 1e-5 * abs(numeric), "d loss / d z[\(i)]")
        }

        // All weights 1 is the unweighted loss, bit for bit up to rounding.
        var d1 = [Float](repeating: 0, count: z.count), d0 = d1
        let ones = [Float](repeating: 1, count: columns)
        let (l1, l0) = z.withUnsafeBufferPointer { zp in
            (d1.withUnsafeMutableBufferPointer { LossKernel.sigmoidBinaryCrossEntropy(logits: zp.baseAddress!, count: z.count, targets: y, positiveWeights: ones, dLogits: $0.baseAddress!) },
             d0.withUnsafeMutableBufferPointer { LossKernel.sigmoidBinaryCrossEntropy(logits: zp.baseAddress!, count: z.count, targets: y, dLogits: $0.baseAddress!) })
        }
        XCTAssertEqual(l1, l0, accuracy: 1e-6)
        for i in 0..<z.count { XCTAssertEqual(d1[i], d0[i], accuracy: 1e-7) }
    }

    /// A tensor with learning-rate scale k moves exactly as under a separate AdamW at k·lr
    /// (its own parameter group), decay included; the others as with no scale.
    func testLearningRateScaleIsAParameterGroupAtThatRate() {
        var layout = ParameterLayout()
        layout.append("body.weight", shape: [3, 4], decays: true)
        layout.append("head.weight", shape: [2, 4], decays: true)
        layout.append("head.bias", shape: [2], decays: false)
        func buffer(_ seed: Float) -> ParameterBuffer {
            let b = ParameterBuffer(layout: layout)
            for i in 0..<b.buffer.count { b.buffer[i] = sin(Float(i) * 0.7 + seed) }
            return b
        }
        let settings = AdamW.Settings(weightDecay: 0.1)
        let lr: Float = 1e-3, scale: Float = 20
        let scaled = AdamW(layout: layout, settings: settings)
        scaled.learningRateScale = ["head.weight": scale, "head.bias": scale]
        let plain = AdamW(layout: layout, settings: settings), fast = AdamW(layout: layout, settings: settings)
        let p = buffer(0), q = buffer(0), r = buffer(0)
        for step in 0..<5 {
            let g = buffer(Float(step) + 1)
            scaled.update(p, gradients: g, learningRate: lr)
            plain.update(q, gradients: g, learningRate: lr)
            fast.update(r, gradients: g, learningRate: lr * scale)
        }
        XCTAssertEqual(p.values("body.weight"), q.values("body.weight"))
        for name in ["head.weight", "head.bias"] {
            for (a, b) in zip(p.values(name), r.values(name)) { XCTAssertEqual(a, b, accuracy: 1e-6, name) }
            XCTAssertNotEqual(p.values(name), q.values(name), name)
        }
    }
}
