import Foundation
import PandoData
import PandoEngine
import PandoText
import PandoTraining
@testable import PandoFederation
import XCTest

/// The coordinator's bounds on what one school can do to the average (issue 17, item 7).
final class UpdateBoundsTests: XCTestCase {
    func testAdamStepBoundFormula() {
        let b = UpdateBounds.adamStepBound()
        XCTAssertEqual(b, 0.1 / (0.001 * (1 - 0.81 / 0.999)).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(b, 7.27, accuracy: 0.01)
    }

    /// No gradient sequence makes AdamW move a coordinate by more than lr·A in one step:
    /// gradients growing as (β₂/β₁)ᵗ (the Cauchy–Schwarz extremal), random ones, spikes.
    func testAdamWStepsNeverExceedTheBound() {
        var layout = ParameterLayout()
        layout.append("w", shape: [4], decays: false)
        let bound = Float(UpdateBounds.adamStepBound())
        var rng = SplitMix64(seed: 7)
        let sequences: [(Int) -> [Float]] = [
            { t in [Float(pow(0.999 / 0.9, Double(t))), 1, -Float(pow(0.999 / 0.9, Double(t))), 0] },
            { _ in (0..<4).map { _ in Float(Double.random(in: -1...1, using: &rng)) * 1e3 } },
            { t in t % 50 == 49 ? [1e6, -1e6, 1e-6, 1] : [1e-3, 1e-3, 1e-3, 1e-3] },
        ]
        var worst: Float = 0
        for gradients in sequences {
            let w = ParameterBuffer(layout: layout), g = ParameterBuffer(layout: layout)
            let adam = AdamW(layout: layout, settings: .init(weightDecay: 0))
            for t in 1...200 {
                let before = w.values
                let values = gradients(t)
                for i in 0..<4 { g.buffer[i] = values[i] }
                adam.update(w, gradients: g, learningRate: 1)
                for i in 0..<4 { worst = max(worst, abs(w.buffer[i] - before[i])) }
            }
        }
        XCTAssertLessThanOrEqual(worst, bound * 1.0001)
        XCTAssertGreaterThan(worst, 2.5, "the extremal sequence should come well above an ordinary step of 1")
    }

    /// A real local training run on the tiny model stays under its bound; a scaled copy does not.
    func testHonestTrainingIsWithinTheBound() throws {
        let folder = try Fixtures.tinyModelFolder()
        let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"])
        let (global, _) = try BertModel.load(from: folder, head: head)
        let tokenizer = try BertTokenizer(folder: folder)
        let rows = (0..<64).map { i in (text: "tok\(i % 10) tok\(20 + i % 7) tok\(i % 3)", label: i % 2 == 0 ? "a" : "b") }
        let data = EncodedDataset(try dataset(rows), tokenizer: tokenizer, maxLength: 16)
        var plan = LocalTrainingPlan()
        plan.epochs = 2
        plan.learningRate = 1e-2  // large, to move the weights as far as AdamW will
        plan.batchSize = 8
        plan.dropout = false
        let updater = try LocalUpdater(like: global)
        let update = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        let norm = DeltaMath.norm(update.delta.buffer)
        let bound = UpdateBounds.maxDeltaNorm(plan: plan, examples: 64, trainedParameters: global.parameterCount,
                                              baseNorm: DeltaMath.norm(global.parameters.buffer))
        print("tiny model: delta norm \(norm), bound \(bound)")
        XCTAssertGreaterThan(norm, 0)
        XCTAssertLessThan(norm, bound)
        DeltaMath.scale(update.delta.buffer, by: Float(2 * bound / norm))
        let round = AggregationRound(round: 1, baseVersion: "v0", layout: global.layout, strategy: FedAvg(), maxNorm: .infinity)
        guard case .normTooLarge = round.submit(update, maxNorm: bound) else { return XCTFail("a scaled delta passed the bound") }
    }

    func testWeightCapAndMedian() {
        XCTAssertEqual(UpdateBounds.median([5, 1, 3]), 3)
        XCTAssertEqual(UpdateBounds.median([4, 1, 3, 2]), 2)
        XCTAssertNil(UpdateBounds.median([]))
        XCTAssertEqual(UpdateBounds.weight(reported: 100_000_000, referenceMedian: 1000, multiple: 3).weight, 3000)
        XCTAssertTrue(UpdateBounds.weight(reported: 100_000_000, referenceMedian: 1000, multiple: 3).capped)
        XCTAssertEqual(UpdateBounds.weight(reported: 2500, referenceMedian: 1000, multiple: 3).weight, 2500)
        XCTAssertFalse(UpdateBounds.weight(reported: 2500, referenceMedian: nil, multiple: 3).capped)
        // A capped school's weight in FedAvg is the cap.
        let layout = smallLayout()
        let acc = DeltaAccumulator(layout: layout)
        var big = update(buffer(layout, Array(repeating: 1, count: 12)), school: "big", examples: 1_000_000)
        big.cappedWeight = 30
        acc.add(big)
        acc.add(update(buffer(layout, Array(repeating: 0, count: 12)), school: "small", examples: 10))
        XCTAssertEqual(acc.totalExamples, 40)
        XCTAssertEqual(acc.finish()?.buffer[0] ?? -1, 0.75, accuracy: 1e-6)
    }

    /// Finite updates whose sum overflows do not make a non-finite global; the base stays.
    func testCommitRefusesANonFiniteResult() {
        let layout = smallLayout()
        let round = AggregationRound(round: 1, baseVersion: "v0", layout: layout, strategy: FedAvg(), maxNorm: .infinity)
        let huge = Array(repeating: Float(3e38), count: 12)
        XCTAssertNil(round.submit(update(buffer(layout, huge), school: "a", examples: 1)))
        XCTAssertNil(round.submit(update(buffer(layout, huge), school: "b", examples: 1)))
        let global = buffer(layout, Array(repeating: 1, count: 12))
        XCTAssertFalse(round.commit(to: global, quorum: 2))
        XCTAssertNotNil(round.commitFailure)
        XCTAssertEqual(global.values, Array(repeating: 1, count: 12))
    }
}
