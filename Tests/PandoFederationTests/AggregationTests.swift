import PandoEngine
@testable import PandoFederation
import XCTest

final class AggregationTests: XCTestCase {
    let layout = smallLayout()
    let counts = [10, 30, 60]
    // Three schools' deltas, deliberately different in sign and scale.
    lazy var deltas: [[Float]] = (0..<3).map { s in (0..<12).map { i in Float(s + 1) * 0.01 * Float(i - 5) + (s == 2 ? 0.3 : -0.1) } }
    let start: [Float] = (0..<12).map { Float($0) * 0.1 - 0.4 }

    /// The example-weighted mean of `deltas` (default: the first round's), in Double.
    func weightedMean(_ of: [[Float]]? = nil) -> [Double] {
        let rows = of ?? deltas, total = Double(counts.reduce(0, +))
        return (0..<12).map { i in (0..<3).reduce(0.0) { $0 + Double(counts[$1]) * Double(rows[$1][i]) } / total }
    }

    func aggregate(_ strategy: any Strategy, into global: ParameterBuffer, round: Int = 1, deltas: [[Float]]? = nil) {
        let r = AggregationRound(round: round, baseVersion: "v\(round - 1)", layout: layout, strategy: strategy, maxNorm: 100)
        for (s, d) in (deltas ?? self.deltas).enumerated() {
            XCTAssertNil(r.submit(update(buffer(layout, d), school: "s\(s)", examples: counts[s], round: round, base: "v\(round - 1)")))
        }
        XCTAssertTrue(r.commit(to: global))
    }

    func testFedAvgIsTheExampleWeightedMean() {
        let global = buffer(layout, start)
        aggregate(FedAvg(), into: global)
        let mean = weightedMean()
        for i in 0..<12 { XCTAssertEqual(Double(global.buffer[i]), Double(start[i]) + mean[i], accuracy: 1e-6) }
    }

    func testFedAvgServerLearningRate() {
        let global = buffer(layout, start)
        aggregate(FedAvg(serverLearningRate: 0.5), into: global)
        let mean = weightedMean()
        for i in 0..<12 { XCTAssertEqual(Double(global.buffer[i]), Double(start[i]) + 0.5 * mean[i], accuracy: 1e-6) }
    }

    func testFedProxServerSideIsFedAvgAndTellsClientsMu() {
        let global = buffer(layout, start)
        let prox = FedProx(mu: 0.05)
        XCTAssertEqual(prox.plan(round: 1, configured: LocalTrainingPlan()).proximalMu, 0.05)
        XCTAssertNil(FedAvg().plan(round: 1, configured: LocalTrainingPlan()).proximalMu)
        aggregate(prox, into: global)
        let mean = weightedMean()
        for i in 0..<12 { XCTAssertEqual(Double(global.buffer[i]), Double(start[i]) + mean[i], accuracy: 1e-6) }
    }

    func testFedAdamFirstTwoRoundsMatchHandComputation() {
        let s = FedAdam.Settings(learningRate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3)
        let adam = FedAdam(layout: layout, settings: s)
        let global = buffer(layout, start)
        let second: [[Float]] = deltas.map { $0.map { -0.5 * $0 + 0.02 } }
        // Hand computation in Double.
        var w = start.map(Double.init), m = [Double](repeating: 0, count: 12)
        var v = [Double](repeating: 1e-6, count: 12)  // v₀ = τ²
        func step(_ d: [Double]) {
            for i in 0..<12 {
                m[i] = 0.9 * m[i] + 0.1 * d[i]
                v[i] = 0.99 * v[i] + 0.01 * d[i] * d[i]
                w[i] += 0.1 * m[i] / (v[i].squareRoot() + 1e-3)
            }
        }
        aggregate(adam, into: global, round: 1)
        step(weightedMean())
        for i in 0..<12 { XCTAssertEqual(Double(global.buffer[i]), w[i], accuracy: 1e-6, "round 1, element \(i)") }
        let mean2 = weightedMean(second)
        aggregate(adam, into: global, round: 2, deltas: second)
        step(mean2)
        for i in 0..<12 {
            XCTAssertEqual(Double(global.buffer[i]), w[i], accuracy: 1e-6, "round 2, element \(i)")
            XCTAssertEqual(Double(adam.firstMoment.buffer[i]), m[i], accuracy: 1e-7)
        }
        XCTAssertEqual(adam.rounds, 2)
        XCTAssertEqual(Set(adam.state.keys), ["fedadam.m", "fedadam.v"])
    }

    /// Server momentum: v ← β·v + Δ, w ← w + η·v, over two rounds, in Double by hand.
    func testFedAvgMFirstTwoRoundsMatchHandComputation() {
        let strategy = FedAvgM(layout: layout, serverLearningRate: 0.5, momentum: 0.9)
        let global = buffer(layout, start)
        let second: [[Float]] = deltas.map { $0.map { -0.5 * $0 + 0.02 } }
        var w = start.map(Double.init), v = [Double](repeating: 0, count: 12)
        func step(_ d: [Double]) {
            for i in 0..<12 { v[i] = 0.9 * v[i] + d[i]; w[i] += 0.5 * v[i] }
        }
        aggregate(strategy, into: global, round: 1)
        step(weightedMean())
        for i in 0..<12 { XCTAssertEqual(Double(global.buffer[i]), w[i], accuracy: 1e-6, "round 1, element \(i)") }
        let mean2 = weightedMean(second)
        aggregate(strategy, into: global, round: 2, deltas: second)
        step(mean2)
        for i in 0..<12 {
            XCTAssertEqual(Double(global.buffer[i]), w[i], accuracy: 1e-6, "round 2, element \(i)")
            XCTAssertEqual(Double(strategy.velocity.buffer[i]), v[i], accuracy: 1e-6)
        }
        XCTAssertEqual(Set(strategy.state.keys), ["fedavgm.velocity"])
        XCTAssertFalse(strategy.needsIndividualUpdates, "the mean is enough: it runs under secure aggregation")
        XCTAssertEqual(strategy.parameters, ["serverLearningRate": 0.5, "momentum": 0.9])
    }

    func testTrimmedMeanDropsTheExtremes() {
        let strategy = TrimmedMean(trim: 1)
        let aggregator = strategy.makeAggregator(layout: layout)
        // Five schools; per coordinate the values are 1, 2, 3 plus one huge and one hugely negative outlier.
        let rows: [[Float]] = [
            [Float](repeating: 2, count: 12),
            [Float](repeating: 1000, count: 12),
            [Float](repeating: 1, count: 12),
            [Float](repeating: -1000, count: 12),
            [Float](repeating: 3, count: 12),
        ].enumerated().map { s, row in row.enumerated().map { i, x in i == 7 && s == 1 ? -5000 : x } }
        for (s, r) in rows.enumerated() { aggregator.add(update(buffer(layout, r), school: "s\(s)", examples: s == 1 ? 1_000_000 : 1)) }
        XCTAssertEqual(aggregator.allocatedBytes, 5 * 4 * 12, "trimmed mean holds every delta: O(k · model)")
        // Keep the buffer alive while reading it: `.buffer` is a non-owning view.
        let aggregate = aggregator.finish()!
        let result = aggregate.buffer.array
        for i in 0..<12 where i != 7 { XCTAssertEqual(result[i], 2, accuracy: 1e-6) }
        // Coordinate 7: values 2, −5000, 1, −1000, 3 → drop −5000 and 3 → mean of −1000, 1, 2.
        XCTAssertEqual(result[7], (-1000 + 1 + 2) / 3, accuracy: 1e-4)
        // A hugely weighted outlier moves FedAvg but not the trimmed mean.
        let global = ParameterBuffer(layout: layout)
        strategy.commit(aggregate: buffer(layout, result), to: global)
        XCTAssertEqual(global.buffer[0], 2, accuracy: 1e-6)
    }

    func testTrimmedMeanWithTooFewSchoolsIsTheMedian() {
        let aggregator = TrimmedMeanAggregator(layout: layout, trim: 2)
        for x: Float in [5, -100, 1] { aggregator.add(update(buffer(layout, [Float](repeating: x, count: 12)))) }
        let median = aggregator.finish()!
        XCTAssertEqual(median.buffer.array, [Float](repeating: 1, count: 12))
    }

    func testAccumulatorMemoryDoesNotGrowWithSchools() {
        var big = ParameterLayout()
        big.append("w", shape: [1000, 100], decays: true)
        big.append("b", shape: [100], decays: false)
        let accumulator = DeltaAccumulator(layout: big)
        let bytes = 4 * big.count
        XCTAssertEqual(accumulator.allocatedBytes, bytes)
        weak var firstDelta: ParameterBuffer?
        for s in 0..<50 {
            let delta = ParameterBuffer(layout: big)
            delta.buffer.fill(Float(s % 7) * 1e-3)
            if s == 0 { firstDelta = delta }
            accumulator.add(update(delta, school: "s\(s)", examples: 1 + s))
            XCTAssertEqual(accumulator.allocatedBytes, bytes, "after \(s + 1) schools")
        }
        XCTAssertNil(firstDelta, "the accumulator must not keep a school's delta")
        XCTAssertEqual(accumulator.contributors, 50)
        XCTAssertEqual(accumulator.totalExamples, (1...50).reduce(0, +))
        var weighted = 0.0
        for s in 0..<50 {
            let value = Double(Float(s % 7) * 1e-3)
            weighted += Double(1 + s) * value
        }
        let expected = weighted / Double((1...50).reduce(0, +))
        let mean = accumulator.finish()!.buffer.array
        XCTAssertEqual(Double(mean[0]), expected, accuracy: 1e-7)
        XCTAssertEqual(Double(mean[big.count - 1]), expected, accuracy: 1e-7)
        XCTAssertNil(accumulator.finish(), "an aggregate is handed out once")
    }

    func testRoundRejectsDuplicatesAndAbortsWithoutQuorum() {
        let global = buffer(layout, start)
        let r = AggregationRound(round: 3, baseVersion: "v2", layout: layout, strategy: FedAvg(), maxNorm: 100)
        XCTAssertNil(r.submit(update(buffer(layout, deltas[0]), school: "a", round: 3, base: "v2")))
        XCTAssertEqual(r.submit(update(buffer(layout, deltas[1]), school: "a", round: 3, base: "v2")), .duplicate(school: "a"))
        XCTAssertEqual(r.submit(update(buffer(layout, deltas[1]), school: "b", round: 2, base: "v2")), .wrongRound(expected: 3, received: 2))
        XCTAssertEqual(r.accepted.map(\.school), ["a"])
        XCTAssertEqual(r.rejected.map(\.school), ["a", "b"])
        XCTAssertFalse(r.commit(to: global, quorum: 2))
        XCTAssertEqual(global.buffer.array, start, "an aborted round keeps the previous weights")
        XCTAssertTrue(r.commit(to: global, quorum: 1))
        for i in 0..<12 { XCTAssertEqual(global.buffer[i], start[i] + deltas[0][i], accuracy: 1e-6) }
    }

    /// Round r of R trains at the decay's value at (r − ½)/R; past R the last rate holds.
    func testRoundDecayFactors() {
        let linear = (1...6).map { RoundDecay.linear.factor(round: $0, of: 5) }
        for (got, want) in zip(linear, [0.9, 0.7, 0.5, 0.3, 0.1, 0.1]) { XCTAssertEqual(got, want, accuracy: 1e-12) }
        let cosine = (1...5).map { RoundDecay.cosine.factor(round: $0, of: 5) }
        for (got, want) in zip(cosine, [0.975528, 0.793893, 0.5, 0.206107, 0.024472]) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        XCTAssertEqual(RoundDecay.none.factor(round: 3, of: 5), 1)
        var plan = LocalTrainingPlan()
        plan.learningRate = 5e-5
        XCTAssertEqual(RoundDecay.linear.plan(round: 2, of: 5, configured: plan).learningRate, 3.5e-5)
        XCTAssertEqual(RoundDecay.none.plan(round: 2, of: 5, configured: plan), plan)
    }
}
