/// The largest batch a workspace can hold.
public struct BatchCapacity: Sendable, Equatable {
    public var sequences: Int
    /// Longest sequence, in tokens (at most the model's position count).
    public var length: Int
    /// Total real tokens over all sequences.
    public var tokens: Int

    public init(sequences: Int, length: Int, tokens: Int? = nil) {
        self.sequences = sequences
        self.length = length
        self.tokens = tokens ?? sequences * length
    }
}

/// Every activation and scratch buffer a forward and backward pass needs,
/// allocated once for a capacity. A training step allocates nothing.
///
/// A training workspace keeps each layer's activations for the backward
/// pass; an inference workspace keeps one layer's worth and reuses it.
public final class BertWorkspace: @unchecked Sendable {
    public let capacity: BatchCapacity
    public let training: Bool
    let hidden: Int, intermediate: Int, heads: Int, layers: Int, outputs: Int

    struct LayerActivations {
        let qkv: FloatBuffer          // [N, 3H], biases included
        let probabilities: FloatBuffer // Σ heads·L², softmax output (shared by all layers: backward recomputes it)
        let context: FloatBuffer      // [N, H]
        let normalized1: FloatBuffer  // [N, H], x̂ of the attention LayerNorm
        let inverseStd1: FloatBuffer  // [N]
        let attentionOut: FloatBuffer // [N, H], LayerNorm output
        let ffnPre: FloatBuffer       // [N, I], before the activation
        let normalized2: FloatBuffer  // [N, H]
        let inverseStd2: FloatBuffer  // [N]
    }

    var storage: [FloatStorage] = []
    var layerActivations: [LayerActivations] = []
    /// Layer inputs and outputs: `hiddenStates[l]` feeds layer `l`.
    var hiddenStates: [FloatBuffer] = []
    var embeddingNormalized: FloatBuffer!, embeddingInverseStd: FloatBuffer!

    // Scratch shared by all layers. The feed-forward activation is not kept
    // per layer: backward recomputes it from `ffnPre`, which saves
    // tokens × intermediate floats per layer for one cheap element-wise pass.
    var denseOut: FloatBuffer!, dropped: FloatBuffer!, ffnActivation: FloatBuffer!
    var dHidden: FloatBuffer!, dNext: FloatBuffer!, dResidual: FloatBuffer!, dDropped: FloatBuffer!
    var dContext: FloatBuffer!, dQKV: FloatBuffer!, dFFN: FloatBuffer!, dProbabilities: FloatBuffer!
    var normScratch: FloatBuffer!, ones: FloatBuffer!, normDiscard: FloatBuffer!
    /// Gradient of the summed input embeddings after a backward pass.
    var dEmbeddingSum: FloatBuffer?
    /// Set while a backward pass runs in norm mode: parameter gradients go to per-example
    /// norms here instead of into the gradient buffer (``BertModel/clippedGradients``).
    var exampleNorms: ExampleGradientNorms?
    /// The lowest layer backward runs (``BertModel/backwardFloor(frozen:)``); -1: all, embeddings included.
    public var backwardFloor = -1
    /// Offsets of the frozen tensors, adjacent ones merged: backward skips their weight and
    /// bias gradients (``BertModel/linearBackward``) instead of computing and discarding them.
    public internal(set) var frozenRanges: [Range<Int>] = []

    // LoRA: each adapter's `u = (α/r)·drop(x)·Aᵀ` (rows × r), per layer when training; the
    // dropped adapter input (rows × widest input) and `v = (α/r)·dY·B` (rows × r).
    var loraU: FloatBuffer!, loraInput: FloatBuffer!, loraGradient: FloatBuffer!
    var loraPerLayer = 0, loraSlotFloats = 0

    // Head.
    var poolInput: FloatBuffer!, pooled: FloatBuffer!, pooledDropped: FloatBuffer!
    var logits: FloatBuffer!, dLogits: FloatBuffer!, dPooled: FloatBuffer!, dPoolInput: FloatBuffer!

    /// Compact one-row-per-sequence matrices of the last layer's first-token pass.
    var firstTokens: FloatBuffer!
    /// Whether the last `encode` ran the last layer for first tokens only.
    var lastLayerRanFirstTokensOnly = false

    /// Quantized activation rows when the model runs its int8 encoder (inference only).
    let int8: (encoder: Int8Encoder, scratch: Int8Scratch)?

    var table = SequenceTable()
    var positions: [Int32] = []

    public init(model: BertModel, capacity: BatchCapacity, training: Bool) {
        let c = model.config
        precondition(!(training && model.inferenceOnly), "a model loaded from an int8 checkpoint runs inference only")
        precondition(capacity.length <= c.maxPositions, "capacity length \(capacity.length) exceeds the model's \(c.maxPositions) positions")
        self.capacity = capacity
        self.training = training
        hidden = c.hiddenSize; intermediate = c.intermediateSize; heads = c.heads; layers = c.layers
        outputs = model.head.outputs
        let N = capacity.tokens, H = hidden, I = intermediate, B = capacity.sequences
        let probs = heads * N * capacity.length
        precondition(model.lora == nil || model.int8 == nil, "an int8 encoder has no adapters: quantize the merged model")
        if !training, let encoder = model.int8 {
            int8 = (encoder, Int8Scratch(rows: N, widestInput: max(H, I)))
        } else {
            int8 = nil
        }

        func make(_ count: Int) -> FloatBuffer {
            let s = FloatStorage(count: count)
            storage.append(s)
            return s.buffer
        }
        let activationSets = training ? layers : 1
        let probabilities = make(probs)
        for _ in 0..<activationSets {
            layerActivations.append(LayerActivations(
                qkv: make(N * 3 * H), probabilities: probabilities, context: make(N * H),
                normalized1: make(training ? N * H : 0), inverseStd1: make(N), attentionOut: make(N * H),
                ffnPre: make(N * I),
                normalized2: make(training ? N * H : 0), inverseStd2: make(N)))
        }
        let states = training ? layers + 1 : 2
        for _ in 0..<states { hiddenStates.append(make(N * H)) }
        embeddingNormalized = make(training ? N * H : 0)
        embeddingInverseStd = make(N)
        denseOut = make(N * H)
        ffnActivation = make(N * I)
        let hasDropout = c.attentionDropout > 0
        dropped = make(hasDropout ? probs : 0)
        if training {
            dHidden = make(N * H); dNext = make(N * H); dResidual = make(N * H); dDropped = make(N * H)
            dContext = make(N * H); dQKV = make(N * 3 * H); dFFN = make(N * I); dProbabilities = make(probs)
            normScratch = make(2 * H * Parallel.workers)
            normDiscard = make(2 * H)
            ones = make(N); ones.fill(1)
        }
        firstTokens = make(FirstTokenBuffers.floats(sequences: B, hidden: H, intermediate: I, training: training))
        poolInput = make(B * H); pooled = make(B * H); pooledDropped = make(B * H)
        logits = make(B * outputs); dLogits = make(B * outputs); dPooled = make(B * H); dPoolInput = make(B * H)
        if let lora = model.lora {
            loraSlotFloats = N * lora.rank
            loraPerLayer = lora.targets.count * loraSlotFloats
            loraU = make(activationSets * loraPerLayer)
            loraInput = make(lora.dropout > 0 ? N * max(H, I) : 0)
            loraGradient = make(training ? N * lora.rank : 0)
        }
        positions.reserveCapacity(N)
    }

    /// Adapter `slot`'s `u` of layer `layer` (capacity-tokens × rank floats).
    @inline(__always)
    func loraActivations(layer: Int, slot: Int) -> UnsafeMutablePointer<Float> {
        loraU.base + (training ? layer : 0) * loraPerLayer + slot * loraSlotFloats
    }

    /// Sets the frozen tensors from `layout`, merging adjacent ranges.
    func setFrozen(_ frozen: Set<String>, layout: ParameterLayout) {
        frozenRanges = ParameterLayout.mergedRanges(layout.tensors.filter { frozen.contains($0.name) })
    }

    /// Whether the element at `offset` is trained, and where the run of elements with the
    /// same answer ends (at most `limit`).
    @inline(__always)
    func trainedRun(from offset: Int, limit: Int) -> (trained: Bool, end: Int) {
        var next = limit
        for r in frozenRanges {
            if r.contains(offset) { return (false, min(r.upperBound, limit)) }
            if r.lowerBound > offset { next = min(next, r.lowerBound); break }
        }
        return (true, next)
    }

    /// Bytes held by this workspace.
    public var bytes: Int { storage.reduce(0) { $0 + $1.buffer.count * 4 } }

    func activations(_ layer: Int) -> LayerActivations { layerActivations[training ? layer : 0] }
    func input(ofLayer layer: Int) -> FloatBuffer { hiddenStates[training ? layer : layer % 2] }
    func output(ofLayer layer: Int) -> FloatBuffer { hiddenStates[training ? layer + 1 : (layer + 1) % 2] }
    var lastHidden: FloatBuffer { output(ofLayer: layers - 1) }
}
