import PandoEngine

/// The coordinator's side of one round, independent of any transport:
/// every update goes through `UpdateValidator`, accepted ones are folded
/// into the strategy's aggregator at once (so their buffers can be freed),
/// rejected ones are kept with their reason; `commit` applies the strategy
/// when the quorum holds. The coordinator's round driver (PandoServices) runs
/// one per round.
public final class AggregationRound {
    public let validator: UpdateValidator
    private let aggregator: any DeltaAggregator
    private let strategy: any Strategy
    public private(set) var accepted: [UpdateSummary] = []
    public private(set) var rejected: [(school: String, reason: UpdateRejection)] = []
    public private(set) var committed = false
    /// Why `commit` declined although the quorum held (a non-finite aggregate or result).
    public private(set) var commitFailure: String?

    public init(round: Int, baseVersion: String, layout: ParameterLayout, strategy: any Strategy, maxNorm: Double) {
        validator = UpdateValidator(layout: layout, round: round, baseVersion: baseVersion, maxNorm: maxNorm)
        aggregator = strategy.makeAggregator(layout: layout)
        self.strategy = strategy
    }

    public var round: Int { validator.round }
    /// Examples behind the accepted updates.
    public var totalExamples: Int { aggregator.totalExamples }
    /// Bytes of model-sized buffers the aggregator holds.
    public var aggregatorBytes: Int { aggregator.allocatedBytes }

    /// Validates `update` and folds it in; returns why it was rejected, or nil. `maxNorm`,
    /// when given, bounds this update instead of the round's bound (a per-update bound that
    /// depends on its example count).
    @discardableResult
    public func submit(_ update: ModelUpdate, maxNorm: Double? = nil) -> UpdateRejection? {
        precondition(!committed, "round \(round) is already committed")
        let result: Result<UpdateSummary, UpdateRejection>
        if accepted.contains(where: { $0.school == update.school }) {
            result = .failure(.duplicate(school: update.school))
        } else {
            var validator = self.validator
            if let maxNorm { validator.maxNorm = min(validator.maxNorm, maxNorm) }
            result = validator.validate(update)
        }
        switch result {
        case .success(let summary):
            aggregator.add(update)
            accepted.append(summary)
            return nil
        case .failure(let reason):
            rejected.append((update.school, reason))
            return reason
        }
    }

    /// Folds the unmasked weighted mean of a secure-aggregation round. No single school's
    /// update exists here, so the validator's checks apply to the mean (shapes, finiteness,
    /// the round's norm bound: the mean of bounded updates is bounded by the same), and the
    /// contributors are accepted together, each with the example count it reported and no
    /// norm of its own (`.nan`). `totalWeight` is the weight slot the masked sum carried.
    @discardableResult
    public func submitSecureMean(_ mean: ParameterBuffer, totalWeight: Int, contributors: [(school: String, examples: Int)],
                                 maxNorm: Double? = nil) -> UpdateRejection? {
        precondition(!committed, "round \(round) is already committed")
        precondition(accepted.isEmpty, "a secure round takes one mean, not individual updates")
        let update = ModelUpdate(school: "secure-aggregate", round: round, baseVersion: validator.baseVersion, delta: mean,
                                 exampleCount: totalWeight)
        var validator = self.validator
        if let maxNorm { validator.maxNorm = min(validator.maxNorm, maxNorm) }
        switch validator.validate(update) {
        case .failure(let reason):
            for c in contributors { rejected.append((c.school, reason)) }
            return reason
        case .success(let summary):
            aggregator.add(update)
            secureMeanNorm = summary.norm
            accepted = contributors.map { UpdateSummary(school: $0.school, exampleCount: $0.examples, norm: .nan, parameterCount: summary.parameterCount) }
            return nil
        }
    }

    /// The L2 norm of the secure round's mean (nil for a round of individual updates).
    public private(set) var secureMeanNorm: Double?

    /// With at least `quorum` accepted updates, lets the strategy move
    /// `global` and returns true; otherwise leaves `global` untouched (the
    /// round is aborted, the previous version stays) and returns false.
    ///
    /// A new global that would not be finite is never made: an aggregate with a NaN or an
    /// infinity (finite updates can still overflow when summed) is refused before it touches
    /// `global`, and a result that is not finite is undone from a copy; `commitFailure` says why.
    public func commit(to global: ParameterBuffer, quorum: Int = 1) -> Bool {
        precondition(!committed, "round \(round) is already committed")
        guard accepted.count >= max(1, quorum), let aggregate = aggregator.finish() else { return false }
        if let i = DeltaMath.firstNonFinite(aggregate.buffer) {
            commitFailure = "the aggregate delta is not finite (element \(i) of \(aggregate.layout.count))"
            return false
        }
        let previous = ParameterBuffer(layout: global.layout)
        previous.buffer.copy(from: global.buffer)
        strategy.commit(aggregate: aggregate, to: global)
        if let i = DeltaMath.firstNonFinite(global.buffer) {
            global.buffer.copy(from: previous.buffer)
            commitFailure = "the new global weights would not be finite (element \(i) of \(global.layout.count)); the base is kept"
            return false
        }
        committed = true
        return true
    }
}
