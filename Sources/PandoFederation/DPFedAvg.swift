import PandoEngine
import PandoTraining

/// School-level differential privacy at the coordinator (DP-FedAvg, McMahan et al. 2018):
/// each school's delta is clipped to L2 norm S over the trained tensors, the clipped deltas
/// are summed with equal weight, Gaussian noise of standard deviation z·S is added to the sum
/// of every trained tensor, and the sum is divided by a fixed number of schools m (the
/// expected count, so the divisor reveals nothing about who took part). One school's whole
/// contribution, all its students at once, then moves the aggregate by at most S/m.
///
/// Accounting: every round is one Gaussian mechanism of noise multiplier z on the schools;
/// without Poisson sampling of schools (the coordinator asks all connected schools, or a
/// fixed fraction) no amplification is claimed (q = 1), so ε after R rounds is the
/// R-fold composition's, at δ (`epsilon(afterRounds:)`), recorded with each committed round.
public final class DPFedAvg: Strategy {
    public let clip: Float
    public let noiseMultiplier: Float
    public let expectedSchools: Int
    public let delta: Double
    public let serverLearningRate: Float
    /// Draws the noise; cryptographic unless a test passes a seeded one.
    let randomness: DPRandomness
    /// The tensors the current round trains (from its plan): noise goes only there.
    private var frozen: Set<String> = TensorSelection.embeddingTables

    public var name: String { "dp-fedavg" }
    public var parameters: [String: Double] {
        ["clip": decimal(clip), "noiseMultiplier": decimal(noiseMultiplier), "expectedSchools": Double(expectedSchools),
         "delta": delta, "serverLearningRate": decimal(serverLearningRate)]
    }

    public init(clip: Float, noiseMultiplier: Float, expectedSchools: Int, delta: Double = 1e-5, serverLearningRate: Float = 1,
                randomness: DPRandomness = SecureRandomness()) {
        precondition(clip > 0 && noiseMultiplier >= 0 && expectedSchools >= 1, "invalid DP-FedAvg settings")
        self.clip = clip
        self.noiseMultiplier = noiseMultiplier
        self.expectedSchools = expectedSchools
        self.delta = delta
        self.serverLearningRate = serverLearningRate
        self.randomness = randomness
    }

    public func plan(round: Int, configured: LocalTrainingPlan) -> LocalTrainingPlan {
        frozen = configured.freezeEmbeddings ? TensorSelection.embeddingTables : []
        return configured
    }

    /// Per-update statistics: refused under secure aggregation.
    public var needsIndividualUpdates: Bool { true }

    public func makeAggregator(layout: ParameterLayout) -> any DeltaAggregator {
        ClippedNoisySum(layout: layout, selection: TensorSelection(layout: layout, frozen: frozen), clip: clip,
                        noiseStandardDeviation: noiseMultiplier * clip, divisor: expectedSchools, randomness: randomness)
    }

    public func commit(aggregate: ParameterBuffer, to global: ParameterBuffer) {
        DeltaMath.addScaled(aggregate.buffer, by: serverLearningRate, into: global.buffer)
    }

    /// School-level ε at this strategy's δ after `rounds` rounds (no sampling amplification).
    public func epsilon(afterRounds rounds: Int) throws -> Double {
        var accountant = RDPAccountant()
        try accountant.compose(samplingRate: 1, noiseMultiplier: Double(noiseMultiplier), steps: rounds)
        return accountant.epsilon(delta: delta).epsilon
    }
}

/// DP-FedAvg's aggregate: Σᵢ clip(δᵢ, S) + N(0, σ²) on the trained tensors, divided by m.
/// One model-sized buffer, as the plain accumulator.
final class ClippedNoisySum: DeltaAggregator {
    let layout: ParameterLayout
    let selection: TensorSelection
    let clip: Float, noiseStandardDeviation: Float, divisor: Int
    let randomness: DPRandomness
    private let sum: ParameterBuffer
    private(set) var contributors = 0
    private(set) var totalExamples = 0
    /// How many deltas were scaled down, for the round's record.
    private(set) var clipped = 0
    private var finished = false

    init(layout: ParameterLayout, selection: TensorSelection, clip: Float, noiseStandardDeviation: Float, divisor: Int,
         randomness: DPRandomness) {
        self.layout = layout
        self.selection = selection
        self.clip = clip
        self.noiseStandardDeviation = noiseStandardDeviation
        self.divisor = divisor
        self.randomness = randomness
        sum = ParameterBuffer(layout: layout)
    }

    var allocatedBytes: Int { 4 * sum.buffer.count }

    func add(_ update: ModelUpdate) {
        precondition(!finished, "the round's aggregate was already taken")
        var squares = 0.0
        for spec in selection.trained { squares += Elementwise.sumOfSquares(update.delta.view(spec).base, count: spec.count) }
        let norm = squares.squareRoot()
        let factor = Float(min(1, Double(clip) / (norm + 1e-12)))
        if factor < 1 { clipped += 1 }
        for spec in selection.trained { DeltaMath.addScaled(update.delta.view(spec), by: factor, into: sum.view(spec)) }
        contributors += 1
        totalExamples += update.weight
    }

    func finish() -> ParameterBuffer? {
        guard contributors > 0, !finished else { return nil }
        finished = true
        let scratch = FloatStorage(count: 1 << 16)
        withExtendedLifetime(scratch) {
            for spec in selection.trained {
                randomness.addNoise(standardDeviation: noiseStandardDeviation, to: sum.view(spec).base, count: spec.count, scratch: scratch.buffer)
            }
        }
        DeltaMath.scale(sum.buffer, by: 1 / Float(divisor))
        return sum
    }
}
