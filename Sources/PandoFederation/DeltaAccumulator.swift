import PandoEngine

/// Folds a round's accepted updates into the one delta a strategy applies.
/// The coordinator only calls `add` with updates `UpdateValidator` accepted.
public protocol DeltaAggregator: AnyObject {
    var layout: ParameterLayout { get }
    /// Updates folded in so far.
    var contributors: Int { get }
    /// Sum of their example counts.
    var totalExamples: Int { get }
    /// Bytes of model-sized buffers this aggregator holds now.
    var allocatedBytes: Int { get }
    func add(_ update: ModelUpdate)
    /// The round's aggregate delta, or nil when nothing was added. Ends the round:
    /// the aggregator may hand out (and overwrite) its own buffer.
    func finish() -> ParameterBuffer?
}

/// Streaming example-weighted mean of deltas, FedAvg's aggregate:
/// `Σᵢ nᵢ·δᵢ / Σᵢ nᵢ`. Each delta is folded in as it arrives (one threaded
/// pass) and can be freed at once, so memory is one model-sized buffer
/// whatever the number of schools — not FLARE's (clients + 2) × model.
///
/// Numerics: the running sum is Float. Each element's relative rounding
/// error is at most about k·2⁻²⁴ for k schools (≈ 3·10⁻⁶ for 50), far below
/// the noise of local SGD; a Double sum would double the memory (still
/// O(model)) for no measurable gain. Weights enter as `Float(nᵢ)`, exact
/// below 2²⁴ examples per school; the final division uses the exact integer total.
public final class DeltaAccumulator: DeltaAggregator {
    public let layout: ParameterLayout
    private let sum: ParameterBuffer
    public private(set) var contributors = 0
    public private(set) var totalExamples = 0
    private var finished = false

    public init(layout: ParameterLayout) {
        self.layout = layout
        sum = ParameterBuffer(layout: layout)
    }

    public var allocatedBytes: Int { 4 * sum.buffer.count }

    public func add(_ update: ModelUpdate) {
        add(update.delta, weight: update.weight)
    }

    /// Folds `weight · delta` into the running sum.
    public func add(_ delta: ParameterBuffer, weight: Int) {
        precondition(!finished, "the round's aggregate was already taken")
        precondition(delta.buffer.count == layout.count, "delta does not match the accumulator's layout (validate first)")
        precondition(weight > 0, "weight must be positive (validate first)")
        DeltaMath.addScaled(delta.buffer, by: Float(weight), into: sum.buffer)
        contributors += 1
        totalExamples += weight
    }

    public func finish() -> ParameterBuffer? {
        guard contributors > 0, !finished else { return nil }
        finished = true
        DeltaMath.scale(sum.buffer, by: Float(1 / Double(totalExamples)))
        return sum
    }
}
