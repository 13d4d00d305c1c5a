import Foundation

/// Seeded splits, federated shards and class balancing over example indices.
/// A *stratum* is a small integer per example (class, primary label or score bin).
public enum Sampling {
    /// Stratified train/validation split of `strata.count` examples. Each stratum
    /// contributes about `validationFraction` of its members (largest-remainder
    /// rounding so the total is `round(n · fraction)`), chosen by a seeded shuffle.
    /// Returned index lists are in ascending (file) order.
    public static func stratifiedSplit(
        strata: [Int], validationFraction: Double, using rng: inout some RandomNumberGenerator
    ) -> (train: [Int], validation: [Int]) {
        precondition(validationFraction >= 0 && validationFraction <= 1, "validationFraction must be in 0...1")
        let groups = group(strata)
        let n = strata.count
        let total = Int((Double(n) * validationFraction).rounded())
        var take = groups.map { Int((Double($0.count) * validationFraction).rounded(.down)) }
        let remainders = groups.indices.map { Double(groups[$0].count) * validationFraction - Double(take[$0]) }
        var missing = total - take.reduce(0, +)
        for g in groups.indices.sorted(by: { (remainders[$0], -$0) > (remainders[$1], -$1) }) where missing > 0 {
            if take[g] < groups[g].count { take[g] += 1; missing -= 1 }
        }
        var train: [Int] = [], validation: [Int] = []
        for (g, members) in groups.enumerated() {
            var m = members
            seededShuffle(&m, using: &rng)
            validation += m[..<take[g]]
            train += m[take[g]...]
        }
        return (train.sorted(), validation.sorted())
    }

    /// Label-skewed partition into `shards` for federated simulation: for each stratum,
    /// proportions are drawn from a symmetric Dirichlet(alpha) (Gamma draws by
    /// Marsaglia–Tsang) and its shuffled members are cut accordingly. Small alpha gives
    /// strong skew; large alpha gives near-IID shards. Any shard left empty then takes
    /// one random example from the currently largest shard, so every shard is non-empty.
    /// Every index appears in exactly one shard; each shard is in ascending order.
    public static func dirichletPartition(
        strata: [Int], shards: Int, alpha: Double, using rng: inout some RandomNumberGenerator
    ) throws -> [[Int]] {
        guard shards >= 1 else { throw DataError(.invalidArgument("shard count must be at least 1")) }
        guard alpha > 0, alpha.isFinite else { throw DataError(.invalidArgument("Dirichlet alpha must be > 0")) }
        guard strata.count >= shards else {
            throw DataError(.invalidArgument("cannot make \(shards) non-empty shards from \(strata.count) examples"))
        }
        var result = [[Int]](repeating: [], count: shards)
        for members in group(strata) {
            var m = members
            seededShuffle(&m, using: &rng)
            let p = rng.dirichlet(alpha: alpha, count: shards)
            var cumulative = 0.0
            var start = 0
            for k in 0..<shards {
                cumulative += p[k]
                let end = k == shards - 1 ? m.count : min(m.count, Int((cumulative * Double(m.count)).rounded()))
                if end > start { result[k] += m[start..<end]; start = end }
            }
        }
        for k in 0..<shards where result[k].isEmpty {
            var largest = 0
            for j in 1..<shards where result[j].count > result[largest].count { largest = j }
            let pick = rng.index(below: result[largest].count)
            result[k].append(result[largest].remove(at: pick))
        }
        return result.map { $0.sorted() }
    }

    /// "Balanced" class weights as in scikit-learn / Hugging Face examples:
    /// n_samples / (n_classes · count_c). A class with no examples gets weight 0.
    public static func balancedClassWeights(counts: [Int]) -> [Float] {
        let n = Double(counts.reduce(0, +))
        let k = Double(counts.count)
        return counts.map { $0 == 0 ? 0 : Float(n / (k * Double($0))) }
    }

    /// Random oversampling: every index once, then extra indices drawn with
    /// replacement from each smaller stratum until it matches the largest stratum.
    /// Originals come first in order, extras follow by stratum; shuffle per epoch.
    public static func oversampledIndices(strata: [Int], using rng: inout some RandomNumberGenerator) -> [Int] {
        let groups = group(strata)
        let target = groups.map(\.count).max() ?? 0
        var result = Array(strata.indices)
        for members in groups where !members.isEmpty && members.count < target {
            for _ in 0..<(target - members.count) {
                result.append(members[rng.index(below: members.count)])
            }
        }
        return result
    }

    /// How many indices `oversampledIndices` returns: every stratum raised to the largest one's size.
    public static func oversampledCount(strata: [Int]) -> Int {
        let groups = group(strata)
        return groups.count * (groups.map(\.count).max() ?? 0)
    }

    /// Members of each stratum value, ordered by stratum value, indices ascending.
    static func group(_ strata: [Int]) -> [[Int]] {
        var byValue: [Int: [Int]] = [:]
        for (i, s) in strata.enumerated() { byValue[s, default: []].append(i) }
        return byValue.keys.sorted().map { byValue[$0]! }
    }
}

extension LabeledDataset {
    /// The stratum of each example: its class (classification); its rarest label in
    /// the data set, ties to the lower index, or a separate stratum for the empty set
    /// (multi-label); its quantile bin among `regressionBins` bins (regression).
    public func strata(regressionBins: Int = 10) -> [Int] {
        switch task {
        case .classification, .ordinal:
            return examples.map { $0.target.classIndex! }
        case .multiLabel:
            let counts = labelCounts
            return examples.map { e in
                let set = e.target.labelSet!
                return set.min(by: { (counts[$0], $0) < (counts[$1], $1) }) ?? labels.count
            }
        case .regression:
            let scores = examples.map { $0.target.score! }
            let sorted = scores.sorted()
            let bins = max(1, min(regressionBins, scores.count))
            let edges = (1..<bins).map { sorted[$0 * sorted.count / bins] }
            return scores.map { x in edges.reduce(0) { $0 + (x >= $1 ? 1 : 0) } }
        }
    }

    /// Seeded stratified train/validation split (see `Sampling.stratifiedSplit`).
    public func stratifiedSplit(
        validationFraction: Double, using rng: inout some RandomNumberGenerator, regressionBins: Int = 10
    ) -> (train: LabeledDataset, validation: LabeledDataset) {
        let (t, v) = Sampling.stratifiedSplit(strata: strata(regressionBins: regressionBins),
                                              validationFraction: validationFraction, using: &rng)
        return (subset(t), subset(v))
    }

    /// Dirichlet(alpha) label-skew shards (see `Sampling.dirichletPartition`),
    /// stratified like `strata(regressionBins:)`.
    public func dirichletShards(
        _ shards: Int, alpha: Double, using rng: inout some RandomNumberGenerator, regressionBins: Int = 10
    ) throws -> [LabeledDataset] {
        try Sampling.dirichletPartition(strata: strata(regressionBins: regressionBins), shards: shards,
                                        alpha: alpha, using: &rng).map(subset)
    }

    /// "Balanced" weight per class (classification) or per label (multi-label, from
    /// label occurrence counts): n / (k · count); empty for regression.
    public func classWeights() -> [Float] {
        switch task {
        case .classification, .ordinal: return Sampling.balancedClassWeights(counts: labelCounts)
        case .multiLabel:
            let counts = labelCounts
            let n = Double(counts.reduce(0, +)), k = Double(counts.count)
            return counts.map { $0 == 0 ? 0 : Float(n / (k * Double($0))) }
        case .regression: return []
        }
    }

    /// Multi-label: each label's positive weight, negatives / positives among the
    /// examples (`BCEWithLogitsLoss(pos_weight:)`'s usual choice), so that a label's
    /// positives weigh as much in the loss as its negatives; 1 for a label no example has
    /// (it has no positive term to weight) or every example has. Not capped.
    public func positiveWeights() -> [Float] {
        precondition(task == .multiLabel, "positive weights are for multi-label data")
        let n = examples.count
        return labelCounts.map { positives in
            positives == 0 || positives == n ? 1 : Float(Double(n - positives) / Double(positives))
        }
    }

    /// Random oversampling of smaller classes (by stratum) up to the largest one.
    public func oversampled(using rng: inout some RandomNumberGenerator) -> LabeledDataset {
        subset(Sampling.oversampledIndices(strata: strata(), using: &rng))
    }
}
