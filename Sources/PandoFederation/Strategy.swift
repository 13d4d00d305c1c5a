import PandoEngine

/// The hyper-parameters a school trains a round with; what the coordinator
/// sends in a round's task (no data, no weights).
public struct LocalTrainingPlan: Sendable, Equatable, Codable {
    public var epochs = 1
    public var learningRate: Float = 5e-5
    public var batchSize = 32
    /// Tokens per text, special tokens included.
    public var maxLength = 128
    /// Fraction of the round's local updates spent warming up; 0 starts at full rate.
    public var warmupRatio: Double = 0
    /// Decay the rate linearly to 0 over the round's local updates (else constant after warm-up).
    public var linearDecay = false
    public var weightDecay: Float = 0.01
    public var maxGradientNorm: Float? = 1.0
    public var dropout = true
    /// FedProx's μ: when set and positive, local training adds μ·(w − base) to every gradient.
    public var proximalMu: Float?
    /// Seeds the school's shuffling and dropout (mixed with round and school by the client).
    public var seed: UInt64 = 42
    /// Keep the token, position and token-type embeddings frozen (``TensorSelection``): their
    /// updates would reveal which words a school's students used. On by default.
    public var freezeEmbeddings = true
    /// Example-level DP-SGD at every school (noise multiplier, clip, δ); nil: none. A school
    /// may clip tighter, and accounts its own ε from its own data size.
    public var privacy: RoundPrivacy?
    /// How the school compresses its delta for the wire (``UpdatePipeline``); `none` sends Float32.
    public var compression: UpdateCompression = .none
    /// Encoder layers 0..<freezeLayers are neither trained nor sent (a smaller update, and
    /// under DP-SGD fewer noised values).
    public var freezeLayers = 0
    /// How the head reads the encoder (the federation's, fixed when it starts): with `cls` or
    /// `mean` the pooler is unused, hence frozen and not sent.
    public var pooling: Pooling = .pooler
    /// Federated LoRA (``FederatedLoRA``): each round every school adds the same adapters to the
    /// global model (A drawn from `loraSeed(round:)`, B zero), trains B and the head only and
    /// sends those; the coordinator merges the mean into the weights. nil: full fine-tuning.
    public var lora: LoRAConfig?
    /// How each school's loss treats its own label skew (classification; not with DP-SGD,
    /// since the weights would come from the school's data outside the accountant).
    public var classBalance: ClassBalance = .none
    /// `weighted-global`: the district's class prior, unmasked from the one secure sum of the
    /// schools' label fractions (one value per label, summing to 1); nil until that sum is taken.
    public var classPrior: [Double]?

    /// Label fractions a school appends to its masked update this round: `weighted-global`'s k
    /// while no prior is known, so the district's prior comes from one secure sum, not one per round
    /// (0 otherwise).
    public func censusLength(classCount: Int) -> Int { classBalance == .weightedGlobal && classPrior == nil ? classCount : 0 }

    /// The seed the round's shared adapter matrices A are drawn with (coordinator and schools alike).
    public func loraSeed(round: Int) -> UInt64 { (seed ^ 0x10_4A_F3D) &+ UInt64(round) &* 0x9E37_79B9_7F4A_7C15 }

    public init() {}
}

/// The DP-SGD a round's plan asks of every school. The school turns it into ε with its own
/// sampling rate (batch size ÷ its examples) and step count, and may refuse it.
public struct RoundPrivacy: Sendable, Equatable, Codable {
    public var noiseMultiplier: Double
    public var maxGradientNorm: Float
    public var delta: Double
    public init(noiseMultiplier: Double, maxGradientNorm: Float = 1, delta: Double = 1e-5) {
        self.noiseMultiplier = noiseMultiplier
        self.maxGradientNorm = maxGradientNorm
        self.delta = delta
    }
}

/// A federated optimisation method as a value the coordinator is handed:
/// what clients are told each round, how their updates are combined, and how
/// the combined delta turns the global weights into the next ones.
///
/// Adding a strategy is one new file with one conforming class. The defaults
/// give FedAvg's client side (the coordinator's plan unchanged) and its
/// streaming aggregation. Strategies are classes because some keep
/// model-sized server state across rounds (FedAdam's moments).
public protocol Strategy: AnyObject {
    /// Short name for records, logs and the CLI (`fedavg`, `fedadam`, …).
    var name: String { get }
    /// The plan sent to clients for `round`, derived from the coordinator's configured plan.
    func plan(round: Int, configured: LocalTrainingPlan) -> LocalTrainingPlan
    /// A fresh aggregator for one round.
    func makeAggregator(layout: ParameterLayout) -> any DeltaAggregator
    /// Applies the round's aggregate delta to the global weights, in place.
    func commit(aggregate: ParameterBuffer, to global: ParameterBuffer)
    /// Model-sized server state to store with each global version so that a
    /// restarted coordinator continues exactly (empty for stateless strategies).
    var state: [String: ParameterBuffer] { get }
    /// The strategy's hyper-parameters by name, for round records and the audit log.
    var parameters: [String: Double] { get }
    /// Whether the strategy must see each school's update (a robust statistic, per-update
    /// clipping); such a strategy cannot run under secure aggregation, which reveals only the
    /// weighted mean. False for strategies that need only Σ nᵢ·δᵢ / Σ nᵢ.
    var needsIndividualUpdates: Bool { get }
}

extension Strategy {
    public func plan(round: Int, configured: LocalTrainingPlan) -> LocalTrainingPlan { configured }
    public func makeAggregator(layout: ParameterLayout) -> any DeltaAggregator { DeltaAccumulator(layout: layout) }
    public var state: [String: ParameterBuffer] { [:] }
    public var parameters: [String: Double] { [:] }
    public var needsIndividualUpdates: Bool { false }
}

/// A `Float` setting as the decimal it was written as (`1e-4`, not
/// `9.99999974737875e-05`), for records people read.
func decimal(_ value: Float) -> Double { Double(value.description) ?? Double(value) }
