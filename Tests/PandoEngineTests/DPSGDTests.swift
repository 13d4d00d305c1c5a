import Foundation
import XCTest
@testable import PandoEngine

/// DP-SGD's per-example clipping against the naive method it replaces: one backward
/// pass per example, its norm over the trained tensors, clipped, summed.
final class DPSGDTests: XCTestCase {
    func tinyModel(_ objective: Objective, outputs: Int, pooling: Pooling) throws -> BertModel {
        let labels = (0..<(objective == .ordinal ? outputs + 1 : outputs)).map { "l\($0)" }
        let (base, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        let model = BertModel(config: base.config, head: ClassifierHead(objective: objective, labels: labels, pooling: pooling), seed: 7)
        // The encoder from the fixture, the head freshly initialised (seeded).
        for spec in model.layout.tensors where base.layout[spec.name] != nil && base.layout[spec.name]!.shape == spec.shape {
            model.parameters.view(spec).copy(from: base.parameters.view(spec.name))
        }
        return model
    }

    /// Six sequences of lengths 1 to 40 (the fixture's positions), with repeated word ids
    /// and both token types, so that every norm path runs: one-row, Gram ("ghost") and
    /// explicit products, and the embedding rows shared inside a sequence.
    func batch() -> (PackedBatch, [[Int32]], [[Int32]]) {
        var state: UInt64 = 11
        let lengths = [1, 3, 11, 20, 33, 40]
        var sequences: [[Int32]] = [], types: [[Int32]] = []
        for L in lengths {
            sequences.append((0..<L).map { i in i == 0 ? 2 : Int32(5 + { state = CounterRandom.mix(state); return state }() % 12) })
            types.append((0..<L).map { i in i < L / 2 ? 0 : 1 })
        }
        return (PackedBatch(sequences: sequences, types: types), sequences, types)
    }

    func targets(_ objective: Objective, count: Int, outputs: Int) -> Targets {
        switch objective {
        case .softmaxCrossEntropy: .classes((0..<count).map { $0 % outputs })
        case .sigmoidBinaryCrossEntropy: .multiHot((0..<(count * outputs)).map { Float(($0 * 7) % 3 == 0 ? 1 : 0) })
        case .meanSquaredError: .scores((0..<count).map { Float($0) * 0.3 - 0.5 })
        case .ordinal: .multiHot((0..<count).flatMap { i in (0..<outputs).map { k in Float(k < i % (outputs + 1) ? 1 : 0) } })
        }
    }

    func subset(_ t: Targets, _ b: Int, outputs: Int) -> Targets {
        switch t {
        case .classes(let y): .classes([y[b]])
        case .multiHot(let y): .multiHot(Array(y[(b * outputs)..<((b + 1) * outputs)]))
        case .scores(let y): .scores([y[b]])
        }
    }

    /// The naive method: one backward per example, its norm over the trained tensors, a clip
    /// C between the smallest and largest norm (so both branches run), the clipped sum.
    func naiveClipping(_ model: BertModel, workspace ws: BertWorkspace, sequences: [[Int32]], types: [[Int32]], targets y: Targets,
                       outputs: Int, frozen: Set<String>) -> (norms: [Double], C: Float, sum: ParameterBuffer) {
        var naiveNorms: [Double] = []
        var perExample: [ParameterBuffer] = []
        for b in sequences.indices {
            let g = ParameterBuffer(layout: model.layout)
            _ = model.lossAndGradients(PackedBatch(sequences: [sequences[b]], types: [types[b]]), targets: subset(y, b, outputs: outputs),
                                       workspace: ws, gradients: g, dropout: nil)
            for spec in model.layout.tensors where frozen.contains(spec.name) { g.view(spec).fill(0) }
            naiveNorms.append(Elementwise.sumOfSquares(g.buffer.base, count: g.buffer.count).squareRoot())
            perExample.append(g)
        }
        let C = Float(naiveNorms.sorted()[sequences.count / 2])
        let expected = ParameterBuffer(layout: model.layout)
        for (b, g) in perExample.enumerated() {
            let factor = min(1, Double(C) / (naiveNorms[b] + 1e-6))
            for i in 0..<g.buffer.count { expected.buffer[i] += Float(factor) * g.buffer[i] }
        }
        return (naiveNorms, C, expected)
    }

    func testClippedGradientsEqualNaivePerExampleClipping() throws {
        let cases: [(Objective, Int, Pooling, Bool)] = [
            (.softmaxCrossEntropy, 3, .pooler, true), (.softmaxCrossEntropy, 3, .pooler, false),
            (.softmaxCrossEntropy, 4, .cls, true), (.sigmoidBinaryCrossEntropy, 5, .mean, false),
            (.meanSquaredError, 1, .mean, true), (.softmaxCrossEntropy, 3, .mean, true), (.meanSquaredError, 1, .pooler, true),
            (.ordinal, 3, .pooler, true),
        ]
        for (objective, outputs, pooling, freezeEmbeddings) in cases {
            let model = try tinyModel(objective, outputs: outputs, pooling: pooling)
            let frozen = freezeEmbeddings ? Set(model.layout.tensors.map(\.name).filter { $0.hasPrefix("bert.embeddings.") }) : []
            let (packed, sequences, types) = batch()
            let y = targets(objective, count: packed.count, outputs: outputs)
            let capacity = BatchCapacity(sequences: packed.count, length: 40, tokens: packed.tokenCount)
            let ws = BertWorkspace(model: model, capacity: capacity, training: true)

            let (naiveNorms, C, expected) = naiveClipping(model, workspace: ws, sequences: sequences, types: types, targets: y, outputs: outputs, frozen: frozen)

            let norms = ExampleGradientNorms(model: model, frozen: frozen, capacity: capacity)
            let got = ParameterBuffer(layout: model.layout)
            let result = model.clippedGradients(packed, targets: y, workspace: ws, norms: norms, maxGradientNorm: C, gradients: got, dropout: nil)
            let label = "\(objective) \(pooling) frozen embeddings \(freezeEmbeddings)"
            for b in 0..<packed.count {
                XCTAssertEqual(result.norms[b], naiveNorms[b], accuracy: 1e-4 * naiveNorms[b] + 1e-7, "\(label): norm of example \(b)")
            }
            for spec in model.layout.tensors where frozen.contains(spec.name) { got.view(spec).fill(0) }
            let (diff, scale) = maxDifference(got.values, expected.values)
            XCTAssertLessThan(diff, 1e-5 * max(1, scale), "\(label): clipped sum differs by \(diff) (largest element \(scale))")
        }
    }

    func testNormPassWritesNoGradients() throws {
        let model = try tinyModel(.softmaxCrossEntropy, outputs: 3, pooling: .pooler)
        let (packed, _, _) = batch()
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 6, length: 40, tokens: packed.tokenCount), training: true)
        let norms = ExampleGradientNorms(model: model, frozen: [], capacity: ws.capacity)
        let g = ParameterBuffer(layout: model.layout)
        model.forward(packed, workspace: ws)
        _ = model.loss(targets(.softmaxCrossEntropy, count: 6, outputs: 3), batch: packed, workspace: ws)
        ws.exampleNorms = norms
        model.backward(packed, workspace: ws, gradients: g, dropout: nil)
        ws.exampleNorms = nil
        XCTAssertEqual(Elementwise.sumOfSquares(g.buffer.base, count: g.buffer.count), 0, "norm mode touched the gradient buffer")
        XCTAssertTrue(norms.squared.allSatisfy { $0 > 0 }, "every example has a gradient")
    }

    /// With no examples a private step is pure noise: zero-mean, σ·C / (expected batch)
    /// per trained element, and nothing at all in frozen tensors, at the start of the buffer
    /// or between trained ones (noise is drawn over merged trained ranges).
    func testNoiseGoesToTrainedTensorsAtTheCalibratedScale() throws {
        let model = try tinyModel(.softmaxCrossEntropy, outputs: 3, pooling: .pooler)
        var settings = FineTuner.Settings()
        settings.dropout = false
        let tuner = FineTuner(model: model, capacity: BatchCapacity(sequences: 4, length: 40), settings: settings)
        tuner.frozen = Set(model.layout.tensors.map(\.name).filter {
            $0.hasPrefix("bert.embeddings.") || $0.hasPrefix("bert.encoder.layer.0.attention.output.")
        })
        XCTAssertGreaterThan(tuner.trainedRanges.count, 1, "a frozen gap between trained tensors")
        let before = model.parameters.copy()
        let privacy = DPSGDSettings(maxGradientNorm: 0.5, noiseMultiplier: 2, expectedBatchSize: 8)
        tuner.privateStep([], privacy: privacy, noise: SeededGaussianNoise(seed: 1))
        var sum = 0.0, squares = 0.0, n = 0
        for spec in model.layout.tensors {
            let g = tuner.gradients.view(spec)
            if tuner.frozen.contains(spec.name) {
                XCTAssertEqual(Elementwise.sumOfSquares(g.base, count: g.count), 0, "noise in frozen \(spec.name)")
                XCTAssertEqual(model.parameters.values(spec.name), before.values(spec.name), "frozen \(spec.name) moved")
            } else {
                for i in 0..<g.count { sum += Double(g[i]); squares += Double(g[i] * g[i]); n += 1 }
            }
        }
        let sd = (squares / Double(n) - (sum / Double(n)) * (sum / Double(n))).squareRoot()
        let expected = 2 * 0.5 / 8.0
        XCTAssertEqual(sd, expected, accuracy: 0.03 * expected, "noise standard deviation over \(n) elements")
        XCTAssertEqual(sum / Double(n), 0, accuracy: 4 * expected / Double(n).squareRoot())
    }
}

extension DPSGDTests {
    /// Clipping runs two backward passes over one forward; the second must see the same
    /// state as the first (the shared attention-probability buffer once broke this).
    func testSecondBackwardOverOneForwardGivesTheSameGradients() throws {
        for pooling in [Pooling.pooler, .cls, .mean] {
            let model = try tinyModel(.softmaxCrossEntropy, outputs: 3, pooling: pooling)
            let (packed, _, _) = batch()
            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 6, length: 40, tokens: packed.tokenCount), training: true)
            let first = ParameterBuffer(layout: model.layout), second = ParameterBuffer(layout: model.layout)
            model.forward(packed, workspace: ws)
            _ = model.loss(targets(.softmaxCrossEntropy, count: 6, outputs: 3), batch: packed, workspace: ws)
            model.backward(packed, workspace: ws, gradients: first, dropout: nil)
            model.backward(packed, workspace: ws, gradients: second, dropout: nil)
            XCTAssertEqual(first.values, second.values, "\(pooling): the second backward differs")
        }
    }
}

extension DPSGDTests {
    /// Frozen lower layers cost no backward: the trained tensors' gradients are exactly those
    /// of a full backward, and nothing below the floor is touched.
    func testBackwardStopsAtTheLowestTrainedLayer() throws {
        let model = try tinyModel(.softmaxCrossEntropy, outputs: 3, pooling: .pooler)
        let frozen = Set(model.layout.tensors.map(\.name).filter { $0.hasPrefix("bert.embeddings.") || $0.hasPrefix("bert.encoder.layer.0.") })
        XCTAssertEqual(model.backwardFloor(frozen: frozen), 1)
        XCTAssertEqual(model.backwardFloor(frozen: []), -1)
        XCTAssertEqual(model.backwardFloor(frozen: Set(model.layout.tensors.map(\.name).filter { $0.hasPrefix("bert.e") })), model.config.layers)
        let (packed, _, _) = batch()
        let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: 6, length: 40, tokens: packed.tokenCount), training: true)
        let y = targets(.softmaxCrossEntropy, count: 6, outputs: 3)
        let full = ParameterBuffer(layout: model.layout), partial = ParameterBuffer(layout: model.layout)
        _ = model.lossAndGradients(packed, targets: y, workspace: ws, gradients: full, dropout: nil)
        ws.backwardFloor = model.backwardFloor(frozen: frozen)
        _ = model.lossAndGradients(packed, targets: y, workspace: ws, gradients: partial, dropout: nil)
        for spec in model.layout.tensors {
            if frozen.contains(spec.name) {
                XCTAssertEqual(Elementwise.sumOfSquares(partial.view(spec).base, count: spec.count), 0, "\(spec.name) got a gradient")
            } else {
                XCTAssertEqual(partial.values(spec.name), full.values(spec.name), "\(spec.name) differs")
            }
        }
    }
}

extension DPSGDTests {
    /// The same check on DistilBERT (no token types, its pre-classifier head) and RoBERTa
    /// (offset positions, its classification head), every tensor trained.
    func testClippingMatchesNaiveOnOtherFamilies() throws {
        for name in ["distilbert_softmax", "roberta_softmax"] {
            let (model, _) = try BertModel.load(from: Fixture.url("families/\(name)"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
            var state: UInt64 = 5
            let sequences: [[Int32]] = [1, 4, 12, 25, 37].map { L in (0..<L).map { i in i == 0 ? 0 : Int32(5 + { state = CounterRandom.mix(state); return state }() % 9) } }
            let packed = PackedBatch(sequences: sequences)
            let y = Targets.classes((0..<sequences.count).map { $0 % 3 })
            let capacity = BatchCapacity(sequences: sequences.count, length: 37, tokens: packed.tokenCount)
            let ws = BertWorkspace(model: model, capacity: capacity, training: true)
            var naive: [ParameterBuffer] = [], naiveNorms: [Double] = []
            for b in sequences.indices {
                let g = ParameterBuffer(layout: model.layout)
                _ = model.lossAndGradients(PackedBatch(sequences: [sequences[b]]), targets: .classes([b % 3]), workspace: ws, gradients: g, dropout: nil)
                naiveNorms.append(Elementwise.sumOfSquares(g.buffer.base, count: g.buffer.count).squareRoot())
                naive.append(g)
            }
            let C = Float(naiveNorms.sorted()[2])
            let expected = ParameterBuffer(layout: model.layout)
            for (b, g) in naive.enumerated() {
                let f = Float(min(1, Double(C) / (naiveNorms[b] + 1e-6)))
                for i in 0..<g.buffer.count { expected.buffer[i] += f * g.buffer[i] }
            }
            let got = ParameterBuffer(layout: model.layout)
            let result = model.clippedGradients(packed, targets: y, workspace: ws, norms: ExampleGradientNorms(model: model, frozen: [], capacity: capacity),
                                                maxGradientNorm: C, gradients: got, dropout: nil)
            for b in sequences.indices { XCTAssertEqual(result.norms[b], naiveNorms[b], accuracy: 1e-4 * naiveNorms[b], "\(name): norm \(b)") }
            let (diff, scale) = maxDifference(got.values, expected.values)
            XCTAssertLessThan(diff, 1e-5 * max(1, scale), "\(name): clipped sum differs by \(diff)")
        }
    }
}

extension DPSGDTests {
    /// Sequences longer than one Gram block (``ExampleGradientNorms/gramBlock``) on a model
    /// wide enough that their norms take the ghost path: blocks on and off the diagonal,
    /// partial last blocks, and the book's clipped sum, against the naive method.
    func testGhostNormsOverSeveralGramBlocksEqualNaive() throws {
        let (base, _) = try BertModel.load(from: Fixture.url("tiny/softmax"), head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
        var config = base.config
        config.hiddenSize = 256
        config.heads = 4
        config.intermediateSize = 512
        config.maxPositions = 200
        let model = BertModel(config: config, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: .mean), seed: 3)
        let lengths = [150, 2, 70, 129, 65]
        XCTAssertGreaterThan(lengths.max()!, 2 * ExampleGradientNorms.gramBlock, "some sequence spans three blocks")
        XCTAssertLessThanOrEqual(lengths.max()! * (256 + 768), 256 * 768, "the QKV norms take the ghost path")
        var state: UInt64 = 17
        let sequences = lengths.map { L in (0..<L).map { i in i == 0 ? Int32(2) : Int32(5 + { state = CounterRandom.mix(state); return state }() % 12) } }
        let types = lengths.map { L in [Int32](repeating: 0, count: L) }
        let packed = PackedBatch(sequences: sequences, types: types)
        let y = Targets.classes((0..<lengths.count).map { $0 % 3 })
        let capacity = BatchCapacity(sequences: lengths.count, length: 150, tokens: packed.tokenCount)
        let ws = BertWorkspace(model: model, capacity: capacity, training: true)
        let frozen = Set(model.layout.tensors.map(\.name).filter { $0.hasPrefix("bert.embeddings.") })
        let (naiveNorms, C, expected) = naiveClipping(model, workspace: ws, sequences: sequences, types: types, targets: y, outputs: 3, frozen: frozen)
        let got = ParameterBuffer(layout: model.layout)
        let result = model.clippedGradients(packed, targets: y, workspace: ws, norms: ExampleGradientNorms(model: model, frozen: frozen, capacity: capacity),
                                            maxGradientNorm: C, gradients: got, dropout: nil)
        for b in lengths.indices { XCTAssertEqual(result.norms[b], naiveNorms[b], accuracy: 1e-4 * naiveNorms[b], "norm of the sequence of \(lengths[b]) tokens") }
        for spec in model.layout.tensors where frozen.contains(spec.name) { got.view(spec).fill(0) }
        let (diff, scale) = maxDifference(got.values, expected.values)
        XCTAssertLessThan(diff, 1e-5 * max(1, scale), "clipped sum differs by \(diff) (largest element \(scale))")
    }
}
