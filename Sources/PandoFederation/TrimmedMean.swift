import PandoEngine

/// Coordinate-wise trimmed mean (Yin et al., 2018), a robust option: for
/// every coordinate, drop the `trim` largest and `trim` smallest of the k
/// schools' values and average the rest (unweighted: example counts are
/// claims a hostile school could inflate). Tolerates up to `trim` arbitrary
/// updates per coordinate.
///
/// Memory: unlike FedAvg's streaming mean this must see every value of a
/// coordinate at once, so it keeps a copy of every accepted delta:
/// O(k · model) for k schools (50 MiniLM deltas ≈ 6.7 GB). Use it with few
/// schools or small models (or LoRA adapters). With k ≤ 2·trim it keeps the
/// middle value(s): the coordinate-wise median.
public final class TrimmedMean: Strategy {
    public let trim: Int
    public let serverLearningRate: Float
    public var name: String { "trimmed-mean" }
    public var parameters: [String: Double] { ["trim": Double(trim), "serverLearningRate": decimal(serverLearningRate)] }

    public init(trim: Int = 1, serverLearningRate: Float = 1) {
        precondition(trim >= 0, "trim must not be negative")
        self.trim = trim
        self.serverLearningRate = serverLearningRate
    }

    /// Per-update statistics: refused under secure aggregation.
    public var needsIndividualUpdates: Bool { true }

    public func makeAggregator(layout: ParameterLayout) -> any DeltaAggregator {
        TrimmedMeanAggregator(layout: layout, trim: trim)
    }

    public func commit(aggregate: ParameterBuffer, to global: ParameterBuffer) {
        DeltaMath.addScaled(aggregate.buffer, by: serverLearningRate, into: global.buffer)
    }
}

/// Keeps a copy of each delta (O(k · model)); the trimmed mean is computed at `finish`.
public final class TrimmedMeanAggregator: DeltaAggregator {
    public let layout: ParameterLayout
    public let trim: Int
    private var deltas: [ParameterBuffer] = []
    public private(set) var totalExamples = 0

    public init(layout: ParameterLayout, trim: Int) {
        self.layout = layout
        self.trim = trim
    }

    public var contributors: Int { deltas.count }
    public var allocatedBytes: Int { 4 * layout.count * deltas.count }

    public func add(_ update: ModelUpdate) {
        precondition(update.delta.buffer.count == layout.count, "delta does not match the layout (validate first)")
        deltas.append(update.delta.copy())
        totalExamples += update.weight
    }

    public func finish() -> ParameterBuffer? {
        let k = deltas.count
        guard k > 0 else { return nil }
        // Keep at least one value (two when k is even): the median when trimming would drop all.
        let drop = min(trim, (k - 1) / 2)
        let result = ParameterBuffer(layout: layout)
        let out = result.buffer.base
        let sources = deltas.map { $0.buffer.base }
        Parallel.forRanges(layout.count, minimumChunk: 1 << 12) { r in
            var values = [Float](repeating: 0, count: k)
            for i in r {
                for j in 0..<k { values[j] = sources[j][i] }
                values.sort()
                var s: Float = 0
                for j in drop..<(k - drop) { s += values[j] }
                out[i] = s / Float(k - 2 * drop)
            }
        }
        deltas.removeAll()
        return result
    }
}
