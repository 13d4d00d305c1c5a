import Foundation
import PandoEngine
@testable import PandoFederation
import PandoTraining
import XCTest

/// School-level DP-FedAvg (issue 16, item 5): clip each school's delta, noise the sum at the
/// coordinator, divide by the expected count; account the rounds.
final class DPFedAvgTests: XCTestCase {
    /// A layout with one "embedding table" (frozen in rounds) and two trained tensors.
    let layout = smallLayout([("bert.embeddings.word_embeddings.weight", [3, 2]), ("encoder.weight", [2, 3]), ("head.bias", [4])])

    func testDeltasAreClippedAndAveragedOverTheExpectedCount() throws {
        let dp = DPFedAvg(clip: 1, noiseMultiplier: 0, expectedSchools: 4, randomness: SeededRandomness(seed: 1))
        var plan = LocalTrainingPlan()
        plan.freezeEmbeddings = true
        _ = dp.plan(round: 1, configured: plan)
        let aggregator = dp.makeAggregator(layout: layout)
        // Trained values only (the embedding rows are zero, as a valid update has them).
        let big = buffer(layout, [0, 0, 0, 0, 0, 0] + [3, 0, 0, 0, 4, 0] + [0, 0, 0, 0])       // norm 5: scaled to 1
        let small = buffer(layout, [0, 0, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0] + [0.5, 0, 0, 0])  // norm 0.5: kept
        aggregator.add(update(big, school: "a", examples: 1000))
        aggregator.add(update(small, school: "b", examples: 1))
        let sum = try XCTUnwrap(aggregator.finish())
        let expected: [Float] = [0, 0, 0, 0, 0, 0] + [0.6 / 4, 0, 0, 0, 0.8 / 4, 0] + [0.5 / 4, 0, 0, 0]
        for (g, e) in zip(sum.values, expected) { XCTAssertEqual(g, e, accuracy: 1e-7, "equal weights whatever the example counts") }
        XCTAssertEqual((aggregator as? ClippedNoisySum)?.clipped, 1)
    }

    func testNoiseHasTheCalibratedScaleAndSkipsFrozenTensors() throws {
        let wide = smallLayout([("bert.embeddings.word_embeddings.weight", [100, 10]), ("encoder.weight", [200, 100])])
        let dp = DPFedAvg(clip: 0.5, noiseMultiplier: 2, expectedSchools: 5, randomness: SeededRandomness(seed: 3))
        var plan = LocalTrainingPlan()
        plan.freezeEmbeddings = true
        _ = dp.plan(round: 1, configured: plan)
        let aggregator = dp.makeAggregator(layout: wide)
        aggregator.add(update(ParameterBuffer(layout: wide)))
        let sum = try XCTUnwrap(aggregator.finish())
        XCTAssertTrue(sum.values("bert.embeddings.word_embeddings.weight").allSatisfy { $0 == 0 }, "noise in a frozen table")
        let v = sum.values("encoder.weight").map(Double.init)
        let mean = v.reduce(0, +) / Double(v.count)
        let sd = (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(v.count)).squareRoot()
        XCTAssertEqual(sd, 2 * 0.5 / 5, accuracy: 0.03 * 0.2)
    }

    func testEpsilonComposesOverRoundsWithoutSamplingAmplification() throws {
        let dp = DPFedAvg(clip: 1, noiseMultiplier: 1.5, expectedSchools: 5, delta: 1e-5)
        var accountant = RDPAccountant()
        try accountant.compose(samplingRate: 1, noiseMultiplier: 1.5, steps: 10)
        XCTAssertEqual(try dp.epsilon(afterRounds: 10), accountant.epsilon(delta: 1e-5).epsilon, accuracy: 1e-12)
        XCTAssertLessThan(try dp.epsilon(afterRounds: 1), try dp.epsilon(afterRounds: 10))
    }
}
