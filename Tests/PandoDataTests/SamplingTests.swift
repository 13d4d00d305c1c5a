import Foundation
import XCTest
@testable import PandoData

final class SamplingTests: XCTestCase {
    func testSplitMix64KnownStream() {
        // Published reference outputs for seed 1234567 (Rosetta Code,
        // "Pseudo-random numbers/Splitmix64"; same as Vigna's splitmix64.c).
        var rng = SplitMix64(seed: 1_234_567)
        XCTAssertEqual((0..<5).map { _ in rng.next() }, [
            6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423,
            4_593_380_528_125_082_431, 16_408_922_859_458_223_821,
        ])
    }

    func classificationDataset(_ counts: [Int]) -> LabeledDataset {
        var examples: [Example] = []
        for (c, n) in counts.enumerated() {
            for i in 0..<n { examples.append(Example(text: "c\(c) #\(i)", target: .classIndex(c), line: examples.count + 2)) }
        }
        // Interleave classes so the file order is not grouped.
        var rng = SplitMix64(seed: 99)
        seededShuffle(&examples, using: &rng)
        return LabeledDataset(task: .classification,
                              labels: try! LabelMap(names: counts.indices.map { "c\($0)" }), examples: examples)
    }

    func testStratifiedSplitPreservesProportionsAndIsDeterministic() {
        let d = classificationDataset([500, 300, 150, 50])
        var rng = SplitMix64(seed: 42)
        let (train, val) = d.stratifiedSplit(validationFraction: 0.2, using: &rng)
        XCTAssertEqual(val.count, 200)
        XCTAssertEqual(train.count, 800)
        XCTAssertEqual(val.labelCounts, [100, 60, 30, 10])
        XCTAssertEqual(train.labelCounts, [400, 240, 120, 40])
        XCTAssertEqual(Set(train.examples.map(\.line)).union(val.examples.map(\.line)).count, 1000)

        var again = SplitMix64(seed: 42)
        let (train2, val2) = d.stratifiedSplit(validationFraction: 0.2, using: &again)
        XCTAssertEqual(train2.examples, train.examples)
        XCTAssertEqual(val2.examples, val.examples)

        var other = SplitMix64(seed: 43)
        XCTAssertNotEqual(d.stratifiedSplit(validationFraction: 0.2, using: &other).validation.examples, val.examples)
    }

    func testStratifiedSplitRoundingHitsTotal() {
        let strata = [Int](repeating: 0, count: 7) + [Int](repeating: 1, count: 7) + [Int](repeating: 2, count: 7)
        var rng = SplitMix64(seed: 1)
        let (t, v) = Sampling.stratifiedSplit(strata: strata, validationFraction: 0.1, using: &rng)
        XCTAssertEqual(v.count, 2)  // round(21 · 0.1)
        XCTAssertEqual(Set(t + v).count, 21)
    }

    func testRegressionAndMultiLabelStrata() {
        let reg = LabeledDataset(task: .regression, labels: try! LabelMap(names: []),
                                 examples: (0..<100).map { Example(text: "\($0)", target: .score(Float($0))) })
        let bins = reg.strata(regressionBins: 4)
        XCTAssertEqual(bins.filter { $0 == 0 }.count, 25)
        XCTAssertEqual(Set(bins), [0, 1, 2, 3])
        var rng = SplitMix64(seed: 5)
        let (_, v) = reg.stratifiedSplit(validationFraction: 0.2, using: &rng, regressionBins: 4)
        XCTAssertEqual(v.count, 20)
        XCTAssertEqual(Dictionary(grouping: v.examples, by: { Int($0.target.score!) / 25 }).mapValues(\.count),
                       [0: 5, 1: 5, 2: 5, 3: 5])

        // Primary label = rarest label of the example.
        let ml = LabeledDataset(task: .multiLabel, labels: try! LabelMap(names: ["common", "rare"]), examples: [
            Example(text: "a", target: .labelSet([0])), Example(text: "b", target: .labelSet([0, 1])),
            Example(text: "c", target: .labelSet([0])), Example(text: "d", target: .labelSet([])),
        ])
        XCTAssertEqual(ml.strata(), [0, 1, 0, 2])
    }

    func testDirichletShardsNonEmptyAndCoverEveryRowOnce() throws {
        let d = classificationDataset([300, 200, 80, 20, 5])
        for alpha in [0.01, 0.1, 0.5, 100] {
            for shards in [2, 7, 30] {
                var rng = SplitMix64(seed: 7)
                let parts = try Sampling.dirichletPartition(strata: d.strata(), shards: shards, alpha: alpha, using: &rng)
                XCTAssertEqual(parts.count, shards)
                XCTAssertTrue(parts.allSatisfy { !$0.isEmpty }, "alpha \(alpha) shards \(shards)")
                let all = parts.flatMap { $0 }
                XCTAssertEqual(all.count, d.count)
                XCTAssertEqual(Set(all), Set(0..<d.count))
            }
        }
        var a = SplitMix64(seed: 3), b = SplitMix64(seed: 3)
        let s1 = try d.dirichletShards(5, alpha: 0.3, using: &a)
        let s2 = try d.dirichletShards(5, alpha: 0.3, using: &b)
        XCTAssertEqual(s1.map(\.examples), s2.map(\.examples))
        // Small alpha skews labels: some shard is dominated by one class.
        XCTAssertTrue(s1.contains { s in Double(s.labelCounts.max()!) / Double(s.count) > 0.8 })

        var rng = SplitMix64(seed: 1)
        XCTAssertThrowsError(try Sampling.dirichletPartition(strata: [0, 1], shards: 3, alpha: 1, using: &rng))
    }

    func testGammaMeanAndVariance() {
        var rng = SplitMix64(seed: 11)
        for shape in [0.3, 1.0, 4.0] {
            let xs = (0..<20_000).map { _ in rng.gamma(shape: shape) }
            let mean = xs.reduce(0, +) / Double(xs.count)
            let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
            XCTAssertEqual(mean, shape, accuracy: 0.05 * max(1, shape))
            XCTAssertEqual(variance, shape, accuracy: 0.1 * max(1, shape))
        }
    }

    func testBalancedClassWeightsMatchSklearn() {
        // sklearn.utils.class_weight.compute_class_weight("balanced", classes=[0,1,2],
        // y=[0,0,0,0,0,0,1,1,1,2]) → [0.5555555555555556, 1.1111111111111112, 3.3333333333333335]
        let w = Sampling.balancedClassWeights(counts: [6, 3, 1])
        XCTAssertEqual(w[0], 0.5555556, accuracy: 1e-6)
        XCTAssertEqual(w[1], 1.1111112, accuracy: 1e-6)
        XCTAssertEqual(w[2], 3.3333333, accuracy: 1e-6)
        XCTAssertEqual(Sampling.balancedClassWeights(counts: [4, 0]), [0.5, 0])
        XCTAssertEqual(classificationDataset([6, 3, 1]).classWeights(), w)
    }

    func testPositiveWeightsAreNegativesOverPositivesPerLabel() throws {
        // 10 examples; label 0 on 2, label 1 on 4, label 2 on none, label 3 on all.
        let sets: [[Int]] = [[0, 1, 3], [0, 3], [1, 3], [1, 3], [1, 3], [3], [3], [3], [3], [3]]
        let d = LabeledDataset(task: .multiLabel, labels: try LabelMap(names: ["a", "b", "c", "d"]),
                               examples: sets.enumerated().map { Example(text: "t\($0.offset)", target: .labelSet($0.element)) })
        // torch: (n - pos) / pos = [4, 1.5, inf, 0]; a label no example has, or every example has, gets 1.
        XCTAssertEqual(d.positiveWeights(), [4, 1.5, 1, 1])
    }

    func testOversamplingBalancesClasses() {
        let d = classificationDataset([50, 10, 3])
        var rng = SplitMix64(seed: 2)
        let o = d.oversampled(using: &rng)
        XCTAssertEqual(o.labelCounts, [50, 50, 50])
        XCTAssertEqual(Array(o.examples.prefix(d.count)), d.examples)
        var rng2 = SplitMix64(seed: 2)
        XCTAssertEqual(d.oversampled(using: &rng2).examples, o.examples)
        XCTAssertEqual(Sampling.oversampledCount(strata: d.strata()), 150, "the count, without drawing")
        XCTAssertEqual(Sampling.oversampledCount(strata: [4, 4, 9]), Sampling.oversampledIndices(strata: [4, 4, 9], using: &rng).count)
    }

    func testShuffleIsAPermutation() {
        var rng = SplitMix64(seed: 0)
        var a = Array(0..<1000)
        seededShuffle(&a, using: &rng)
        XCTAssertNotEqual(a, Array(0..<1000))
        XCTAssertEqual(a.sorted(), Array(0..<1000))
    }
}
