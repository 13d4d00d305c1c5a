import Foundation
import XCTest
@testable import PandoEngine

/// LoRA adapters: loss and gradients against PyTorch + PEFT (Tests/Fixtures/make_lora_fixtures.py),
/// finite differences through every target kind with adapter dropout on, frozen tensors
/// left without gradients, DP-SGD's per-example norms, PEFT round trip and merging.
final class LoRATests: XCTestCase {
    /// The fixture's base model with the adapter PEFT saved, and the case description.
    func fixtureModel(_ name: String) throws -> (BertModel, [String: Any]) {
        let info = try Fixture.json("lora/\(name)/case.json")
        let pooling = Pooling(rawValue: info["pooling"] as! String)!
        let (base, _) = try BertModel.load(from: Fixture.url("lora/\(name)/base"),
                                           head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: pooling))
        let model = try BertModel.loadPEFTAdapter(from: Fixture.url("lora/\(name)/adapter"), base: base)
        return (model, info)
    }

    /// A training workspace frozen the way LoRA training freezes it.
    func frozenWorkspace(_ model: BertModel, capacity: BatchCapacity) -> BertWorkspace {
        let ws = BertWorkspace(model: model, capacity: capacity, training: true)
        let frozen = model.loraFrozenTensors
        ws.backwardFloor = model.backwardFloor(frozen: frozen)
        ws.setFrozen(frozen, layout: model.layout)
        return ws
    }

    func testLossAndAdapterGradientsMatchPEFT() throws {
        let batch = Fixture.packedBatch(try Fixture.json("tiny/inputs.json"))
        for name in ["qv_pooler", "all_meanpool", "all_pooler"] {
            let (model, info) = try fixtureModel(name)
            XCTAssertEqual(model.lora?.targets.map(\.rawValue), info["targets"] as? [String], "\(name): targets read from PEFT's target_modules")
            XCTAssertEqual(model.lora?.rank, info["rank"] as? Int)
            let ws = frozenWorkspace(model, capacity: BatchCapacity(sequences: 4, length: 11))
            let grads = ParameterBuffer(layout: model.layout)
            let loss = model.lossAndGradients(batch, targets: .classes(info["labels"] as! [Int]), workspace: ws, gradients: grads, dropout: nil)
            let expectedLoss = Float(info["loss"] as! Double)
            XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * max(1, abs(expectedLoss)), "\(name) loss")

            let reference = try SafeTensors.File(url: Fixture.url("lora/\(name)/grads.safetensors"))
            let trainable = Set(reference.entries.keys)
            XCTAssertEqual(trainable, Set(model.layout.tensors.map(\.name)).subtracting(model.loraFrozenTensors), "\(name): PEFT trains what Pando trains")
            for spec in model.layout.tensors {
                let got = grads.view(spec).array
                if trainable.contains(spec.name) {
                    let (diff, scale) = maxDifference(got, try reference.floats(spec.name))
                    XCTAssertGreaterThan(scale, 0, "\(name): \(spec.name) has a nonzero reference gradient")
                    XCTAssertLessThanOrEqual(diff, 2e-5 * max(scale, 1e-2), "\(name): \(spec.name) max error \(diff) at scale \(scale)")
                } else {
                    // Frozen: backward skips the weight gradient, so nothing is written at all.
                    XCTAssertEqual(got.reduce(0) { $0 + $1 * $1 }, 0, "\(name): frozen \(spec.name) got a gradient")
                }
            }
        }
    }

    /// Central differences of the loss (dropout on, fixed key) against backward, for the
    /// largest-gradient entries of A and B of each target kind in the first and last layer.
    func testAdapterGradientsMatchFiniteDifferencesWithDropout() throws {
        let (tiny, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        let batch = Fixture.packedBatch(try Fixture.json("tiny/inputs.json"))
        for pooling in [Pooling.pooler, .mean] {
            let base = BertModel(config: tiny.config, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: pooling))
            base.parameters.buffer.copy(from: tiny.parameters.buffer)
            try checkFiniteDifferences(base: base, batch: batch, label: "bert \(pooling)")
        }
    }

    /// DistilBERT and RoBERTa: their module names (`q_lin`, `ffn.lin2`, …), the same
    /// finite-difference check, and the PEFT folder they write reads back.
    func testOtherFamiliesAdaptersMatchFiniteDifferencesAndRoundTrip() throws {
        let batch = Fixture.packedBatch(try Fixture.json("families/inputs.json"))
        for (family, modules, toSave) in [("distilbert", ["q_lin", "v_lin", "lin2"], ["classifier", "pre_classifier"]),
                                          ("roberta", ["query", "value", "0.output.dense", "1.output.dense"], ["classifier"])] {
            let (base, _) = try BertModel.load(from: Fixture.url("families/\(family)_softmax"),
                                               head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
            try checkFiniteDifferences(base: base, batch: batch, label: family)
            let model = try BertModel(lora: LoRAConfig(rank: 2, targets: [.query, .value, .output]), base: base, seed: 4)
            let folder = try makeTemporaryDirectory()
            try model.savePEFTAdapter(to: folder, baseModel: family)
            let peft = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("adapter_config.json"))) as! [String: Any]
            XCTAssertEqual(peft["target_modules"] as? [String], modules, family)
            XCTAssertEqual(peft["modules_to_save"] as? [String], toSave, family)
            let reloaded = try BertModel.loadPEFTAdapter(from: folder, base: base)
            XCTAssertEqual(reloaded.lora, model.lora, family)
            XCTAssertEqual(reloaded.parameters.values, model.parameters.values, family)
        }
    }

    /// Central differences against backward (dropout on, adapter dropout 0.3, fixed key) for the
    /// largest-gradient entry of A and B of every target kind in the first and last layer.
    func checkFiniteDifferences(base: BertModel, batch: PackedBatch, label: String) throws {
        let targets = Targets.classes((0..<batch.count).map { $0 % base.head.outputs })
        do {
            let model = try BertModel(lora: LoRAConfig(rank: 3, alpha: 5, dropout: 0.3, targets: LoRATarget.allCases), base: base, seed: 9)
            // Nonzero B, so A has a gradient.
            for spec in model.loraTensors where spec.name.contains("lora_B") {
                let v = model.parameters.view(spec)
                for i in 0..<v.count { v[i] = 0.3 * CounterRandom.normal(CounterRandom.key(5, UInt64(spec.offset)), i) }
            }
            let key = DropoutKey(seed: 3, step: 1)
            let ws = frozenWorkspace(model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength))
            let grads = ParameterBuffer(layout: model.layout)
            _ = model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: grads, dropout: key)
            func lossAt() -> Double {
                let g = ParameterBuffer(layout: model.layout)
                return Double(model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: g, dropout: key))
            }
            for l in [0, model.config.layers - 1] {
                for t in LoRATarget.allCases {
                    let names = model.loraTensorNames(layer: l, target: t)
                    for name in [names.a, names.b] {
                        let spec = model.layout[name]!
                        let g = grads.view(spec).array
                        let i = g.indices.max { abs(g[$0]) < abs(g[$1]) }!
                        XCTAssertGreaterThan(abs(g[i]), 1e-4, "\(label) \(name): gradient is not trivially small")
                        let w = model.parameters.view(spec), saved = w[i], h: Float = 1e-2
                        w[i] = saved + h; let up = lossAt()
                        w[i] = saved - h; let down = lossAt()
                        w[i] = saved
                        let numeric = (up - down) / Double(2 * h)
                        XCTAssertEqual(Double(g[i]), numeric, accuracy: 2e-2 * abs(numeric) + 2e-4, "\(label) \(name)[\(i)]")
                    }
                }
            }
        }
    }

    /// DP-SGD over a LoRA model: per-example norms (ghost or explicit, over adapters and
    /// head only) and the clipped sum equal the naive one-example-at-a-time method.
    func testClippedGradientsWithAdaptersEqualNaiveClipping() throws {
        let dp = DPSGDTests(name: "helpers", testClosure: { _ in })
        for pooling in [Pooling.pooler, .mean] {
            let base = try dp.tinyModel(.softmaxCrossEntropy, outputs: 3, pooling: pooling)
            let model = try BertModel(lora: LoRAConfig(rank: 4, alpha: 8, targets: [.query, .value, .attentionOutput, .intermediate, .output]), base: base, seed: 2)
            for spec in model.loraTensors where spec.name.contains("lora_B") {
                let v = model.parameters.view(spec)
                for i in 0..<v.count { v[i] = 0.2 * CounterRandom.normal(CounterRandom.key(8, UInt64(spec.offset)), i) }
            }
            let frozen = model.loraFrozenTensors
            let (packed, sequences, types) = dp.batch()
            let y = dp.targets(.softmaxCrossEntropy, count: packed.count, outputs: 3)
            let capacity = BatchCapacity(sequences: packed.count, length: 40, tokens: packed.tokenCount)
            let ws = frozenWorkspace(model, capacity: capacity)
            // The frozen workspace writes no gradient into frozen tensors, so the naive norms cover adapters and head only.
            let (naiveNorms, C, expected) = dp.naiveClipping(model, workspace: ws, sequences: sequences, types: types, targets: y, outputs: 3, frozen: frozen)
            let norms = ExampleGradientNorms(model: model, frozen: frozen, capacity: capacity)
            let got = ParameterBuffer(layout: model.layout)
            let result = model.clippedGradients(packed, targets: y, workspace: ws, norms: norms, maxGradientNorm: C, gradients: got, dropout: nil)
            for b in 0..<packed.count {
                XCTAssertEqual(result.norms[b], naiveNorms[b], accuracy: 1e-4 * naiveNorms[b] + 1e-7, "\(pooling): norm of example \(b)")
            }
            let (diff, scale) = maxDifference(got.values, expected.values)
            XCTAssertLessThan(diff, 1e-5 * max(1, scale), "\(pooling): clipped sum differs by \(diff) (largest element \(scale))")
        }
    }

    /// A fresh adapter computes what the base computes (B = 0); after training steps the
    /// merged plain model computes what the adapter model computes; saved and reloaded in
    /// PEFT's format the adapter gives the same logits.
    func testFreshAdapterIsIdentityAndMergeAndPEFTRoundTripAgree() throws {
        let (base, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        let batch = Fixture.packedBatch(try Fixture.json("tiny/inputs.json"))
        let capacity = BatchCapacity(sequences: 4, length: 11)
        // Logits are views into the workspace: keep each workspace alive while reading them.
        func logits(_ m: BertModel) -> [Float] {
            let ws = BertWorkspace(model: m, capacity: capacity, training: false)
            return withExtendedLifetime(ws) { m.forward(batch, workspace: ws).array }
        }
        let reference = logits(base)
        let model = try BertModel(lora: LoRAConfig(rank: 4, alpha: 16, dropout: 0.1, targets: [.query, .value, .output]), base: base, seed: 1)
        XCTAssertEqual(maxDifference(logits(model), reference).diff, 0)
        // A is kaiming-uniform(a=√5): U(−1/√in, 1/√in), not constant.
        let a = model.parameters.values(model.loraTensorNames(layer: 0, target: .query).a)
        let bound = 1 / Float(model.config.hiddenSize).squareRoot()
        XCTAssertTrue(a.allSatisfy { abs($0) <= bound } && a.max()! > 0.8 * bound && a.min()! < -0.8 * bound)

        var settings = FineTuner.Settings()
        settings.learningRate = 1e-2
        let tuner = FineTuner(model: model, capacity: capacity, settings: settings)
        tuner.frozen = model.loraFrozenTensors
        let before = model.parameters.copy()
        for _ in 0..<3 { tuner.step(batch, targets: .classes([0, 2, 1, 2])) }
        for spec in model.layout.tensors where tuner.frozen.contains(spec.name) {
            XCTAssertEqual(model.parameters.values(spec.name), before.values(spec.name), "frozen \(spec.name) moved")
        }
        let trained = logits(model)
        XCTAssertGreaterThan(maxDifference(trained, reference).diff, 1e-3, "training moved the logits")
        let merged = model.mergedLoRA()
        XCTAssertNil(merged.lora)
        XCTAssertEqual(merged.layout, base.layout)
        let mergedLogits = logits(merged)
        XCTAssertLessThan(maxDifference(mergedLogits, trained).diff, 1e-5)

        let folder = try makeTemporaryDirectory()
        try model.savePEFTAdapter(to: folder, baseModel: "tiny")
        let reloaded = try BertModel.loadPEFTAdapter(from: folder, base: base)
        XCTAssertEqual(reloaded.lora, model.lora)
        XCTAssertEqual(reloaded.parameters.values, model.parameters.values, "adapters and head read back exactly")
        let peft = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(peft["target_modules"] as? [String], ["query", "value", "0.output.dense", "1.output.dense"],
                       "BERT's feed-forward output.dense alone would also match attention.output.dense")
        XCTAssertEqual(peft["modules_to_save"] as? [String], ["classifier", "pooler"])
    }

    func testInvalidSettingsAreRefused() throws {
        XCTAssertThrowsError(try LoRATarget.parseList("query,values")) { XCTAssertTrue("\($0)".contains("unknown LoRA target 'values'")) }
        XCTAssertEqual(try LoRATarget.parseList("value, q,attention.output.dense"), [.query, .value, .attentionOutput])
        XCTAssertThrowsError(try LoRAConfig(rank: 0).validate()) { XCTAssertTrue("\($0)".contains("--lora-rank")) }
        XCTAssertThrowsError(try LoRAConfig(rank: 4, alpha: -1).validate())
        XCTAssertThrowsError(try LoRAConfig(rank: 4, dropout: 1).validate())
        let (base, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        let model = try BertModel(lora: LoRAConfig(rank: 2), base: base)
        XCTAssertThrowsError(try BertModel(lora: LoRAConfig(rank: 2), base: model))
    }
}
