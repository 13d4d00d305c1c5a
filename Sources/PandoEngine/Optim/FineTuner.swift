/// One optimisation step over a model, the unit every training loop in
/// Pando is built from (local training, federated rounds, benchmarks):
/// zero the gradients, forward and backward, clip, AdamW with the schedule.
/// All buffers are allocated at construction.
public final class FineTuner: @unchecked Sendable {
    public struct Settings: Sendable, Equatable, Codable {
        public var learningRate: Float = 5e-5
        public var schedule: LearningRateSchedule = .constant
        public var maxGradientNorm: Float? = 1.0
        public var adam: AdamW.Settings = .init()
        /// Seeds the dropout masks; the same seed and step give the same update.
        public var seed: UInt64 = 42
        /// Dropout as configured by the model; `false` trains deterministically.
        public var dropout = true
        public init() {}
    }

    public struct StepResult: Sendable {
        public let loss: Float
        public let gradientNorm: Float
        public let learningRate: Float
    }

    public let model: BertModel
    public let settings: Settings
    public let workspace: BertWorkspace
    public let gradients: ParameterBuffer
    public let optimizer: AdamW
    /// Updates taken so far.
    public internal(set) var step = 0
    /// Per-example norm scratch for private steps, made at the first one.
    var exampleNorms: ExampleGradientNorms?
    /// Private steps form the clipped sum from the norm pass's book (``GradientBook``);
    /// `false` takes a second backward instead (the same sum, slower; for comparison).
    public var bookKeeping = true
    /// Noise is drawn in chunks of this buffer, so a private step allocates nothing.
    lazy var noiseScratch = FloatStorage(count: 1 << 16)
    /// Where in the flat buffer the trained tensors lie, neighbours merged: a private step
    /// draws its noise over each range in one pass, not tensor by tensor.
    private(set) var trainedRanges: [Range<Int>]

    public init(model: BertModel, capacity: BatchCapacity, settings: Settings) {
        self.model = model
        self.settings = settings
        workspace = BertWorkspace(model: model, capacity: capacity, training: true)
        gradients = ParameterBuffer(layout: model.layout)
        optimizer = AdamW(layout: model.layout, settings: settings.adam)
        trainedRanges = ParameterLayout.mergedRanges(model.layout.tensors)
    }

    /// FedProx's proximal term `μ/2 · ‖w − anchor‖²`: when set, every step
    /// adds `μ · (w − anchor)` to the gradients before clipping, pulling local
    /// training towards the round's global weights.
    public var proximal: (anchor: ParameterBuffer, mu: Float)? {
        didSet {
            if let anchor = proximal?.anchor { precondition(anchor.layout == model.layout, "proximal anchor layout differs from the model's") }
        }
    }

    /// Added to a softmax head's logits in the training loss only (logit adjustment, e.g. a
    /// school's log prior or −∞ for the classes it has none of); nil: plain cross-entropy.
    public var logitOffsets: [Float]? {
        didSet { if let o = logitOffsets { precondition(o.count == model.head.outputs, "\(o.count) logit offsets for \(model.head.outputs) outputs") } }
    }

    /// Tensors excluded from updates (for freezing embeddings or layers).
    public var frozen: Set<String> {
        get { optimizer.frozen }
        set {
            optimizer.frozen = newValue
            workspace.backwardFloor = model.backwardFloor(frozen: newValue)
            workspace.setFrozen(newValue, layout: model.layout)
            trainedRanges = ParameterLayout.mergedRanges(model.layout.tensors.filter { !newValue.contains($0.name) })
        }
    }

    /// Adds FedProx's `μ · (w − anchor)` to the gradients when a proximal term is set.
    func addProximalTerm() {
        guard let (anchor, mu) = proximal, mu > 0 else { return }
        let g = gradients.buffer.base, w = model.parameters.buffer.base, a = anchor.buffer.base
        Parallel.forRanges(gradients.buffer.count, minimumChunk: 1 << 16) { range in
            for i in range { g[i] += mu * (w[i] - a[i]) }
        }
    }

    /// One update on `batch`; returns the loss before the update.
    @discardableResult
    public func step(_ batch: PackedBatch, targets: Targets, classWeights: [Float]? = nil) -> StepResult {
        gradients.zero()
        let key = settings.dropout ? DropoutKey(seed: settings.seed, step: UInt64(step)) : nil
        let loss = model.lossAndGradients(batch, targets: targets, workspace: workspace, gradients: gradients, dropout: key,
                                           classWeights: classWeights, logitOffsets: logitOffsets)
        addProximalTerm()
        let norm: Float
        if let maxNorm = settings.maxGradientNorm {
            norm = GradientClipping.clip(gradients, maxNorm: maxNorm)
        } else {
            norm = Float(Elementwise.sumOfSquares(gradients.buffer.base, count: gradients.buffer.count).squareRoot())
        }
        let lr = settings.learningRate * settings.schedule.factor(at: step)
        optimizer.update(model.parameters, gradients: gradients, learningRate: lr)
        step += 1
        return StepResult(loss: loss, gradientNorm: norm, learningRate: lr)
    }
}
