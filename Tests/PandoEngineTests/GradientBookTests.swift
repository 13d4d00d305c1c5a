import Foundation
import XCTest
@testable import PandoEngine

/// DP-SGD's book-keeping (``GradientBook``) against the second backward it replaces, which
/// `DPSGDTests` checks against naive per-example clipping. Four layers, so that a layer's
/// booked input cannot be mistaken for another's by luck of which layer ran last; dropout
/// on, so that the booked gradients must carry the same masks; LoRA with adapter dropout,
/// whose dropped input lives in shared scratch; frozen lower layers; and batches of growing
/// size through one book, so its storage grows and is reused.
final class GradientBookTests: XCTestCase {
    func model(_ objective: Objective, outputs: Int, pooling: Pooling) throws -> BertModel {
        let (base, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        var config = base.config
        config.layers = 4
        config.hiddenDropout = 0.1
        config.attentionDropout = 0.1
        let labels = (0..<(objective == .ordinal ? outputs + 1 : outputs)).map { "l\($0)" }
        return BertModel(config: config, head: ClassifierHead(objective: objective, labels: labels, pooling: pooling), seed: 19)
    }

    func batch(_ lengths: [Int], seed: UInt64) -> PackedBatch {
        var state = seed
        let sequences = lengths.map { L in (0..<L).map { i in i == 0 ? Int32(2) : Int32(5 + { state = CounterRandom.mix(state); return state }() % 12) } }
        return PackedBatch(sequences: sequences, types: lengths.map { L in (0..<L).map { $0 < L / 2 ? 0 : 1 } })
    }

    /// Both methods over the same batches and dropout masks; returns the worst difference
    /// relative to the largest gradient element.
    func compare(_ model: BertModel, frozen: Set<String>, targets: (Int) -> Targets, label: String) {
        let batches = [batch([1, 7, 30], seed: 3), batch([40, 2, 19, 33, 12, 1], seed: 4), batch([25, 9], seed: 5)]
        let capacity = BatchCapacity(sequences: 6, length: 40)
        let ws = BertWorkspace(model: model, capacity: capacity, training: true)
        ws.backwardFloor = model.backwardFloor(frozen: frozen)
        ws.setFrozen(frozen, layout: model.layout)
        let booked = ExampleGradientNorms(model: model, frozen: frozen, capacity: capacity)
        let twoPass = ExampleGradientNorms(model: model, frozen: frozen, capacity: capacity)
        twoPass.keepsBook = false
        for (step, packed) in batches.enumerated() {
            let key = DropoutKey(seed: 9, step: UInt64(step))
            let y = targets(packed.count)
            let expected = ParameterBuffer(layout: model.layout), got = ParameterBuffer(layout: model.layout)
            // The smallest norm as the clip: every other example gets its own factor below 1.
            let found = model.clippedGradients(packed, targets: y, workspace: ws, norms: twoPass, maxGradientNorm: 1, gradients: expected, dropout: key).norms
            let C = Float(found.min()!)
            expected.zero()
            let reference = model.clippedGradients(packed, targets: y, workspace: ws, norms: twoPass, maxGradientNorm: C, gradients: expected, dropout: key)
            let result = model.clippedGradients(packed, targets: y, workspace: ws, norms: booked, maxGradientNorm: C, gradients: got, dropout: key)
            XCTAssertEqual(result.norms, reference.norms, "\(label), batch \(step): the norm pass is the same in both")
            XCTAssertEqual(Set(found).count, found.count, "\(label), batch \(step): distinct norms, so distinct clip factors (\(found))")
            let (diff, scale) = maxDifference(got.values, expected.values)
            XCTAssertGreaterThan(scale, 0, "\(label), batch \(step): a gradient")
            XCTAssertLessThan(diff, 1e-5 * max(1, scale), "\(label), batch \(step): booked sum differs by \(diff) (largest element \(scale))")
        }
    }

    func testBookedClippedSumEqualsTheSecondBackward() throws {
        let classes = { (n: Int) in Targets.classes((0..<n).map { $0 % 3 }) }
        for pooling in [Pooling.pooler, .cls, .mean] {
            let m = try model(.softmaxCrossEntropy, outputs: 3, pooling: pooling)
            compare(m, frozen: [], targets: classes, label: "\(pooling), every tensor trained")
            let lower = Set(m.layout.tensors.map(\.name).filter { $0.hasPrefix("bert.embeddings.") || $0.hasPrefix("bert.encoder.layer.0.") || $0.hasPrefix("bert.encoder.layer.1.") })
            compare(m, frozen: lower, targets: classes, label: "\(pooling), embeddings and layers 0–1 frozen")
        }
        let ordinal = try model(.ordinal, outputs: 3, pooling: .pooler)
        compare(ordinal, frozen: [], targets: { n in .multiHot((0..<n).flatMap { i in (0..<3).map { k in Float(k < i % 4 ? 1 : 0) } }) }, label: "ordinal")
    }

    func testBookedClippedSumEqualsTheSecondBackwardWithLoRA() throws {
        let classes = { (n: Int) in Targets.classes((0..<n).map { $0 % 3 }) }
        for pooling in [Pooling.pooler, .mean] {
            let base = try model(.softmaxCrossEntropy, outputs: 3, pooling: pooling)
            let m = try BertModel(lora: LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targets: [.query, .key, .value, .attentionOutput, .intermediate, .output]),
                                  base: base, seed: 2)
            for spec in m.loraTensors where spec.name.contains("lora_B") {
                let v = m.parameters.view(spec)
                for i in 0..<v.count { v[i] = 0.2 * CounterRandom.normal(CounterRandom.key(8, UInt64(spec.offset)), i) }
            }
            compare(m, frozen: m.loraFrozenTensors, targets: classes, label: "LoRA, \(pooling)")
        }
    }
}
