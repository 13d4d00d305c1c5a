import Foundation

extension BertModel {
    /// The head's loss on the logits of the last `forward`, writing the
    /// workspace's logit gradients. `classWeights` are per-class weights for softmax
    /// (`CrossEntropyLoss(weight:)`) and per-label positive weights for sigmoid
    /// binary cross-entropy (`BCEWithLogitsLoss(pos_weight:)`); the other heads ignore them.
    /// `logitOffsets` (softmax only) are added to the logits in the loss only, see
    /// `LossKernel.softmaxCrossEntropy`.
    public func loss(_ targets: Targets, batch: PackedBatch, workspace ws: BertWorkspace, classWeights: [Float]? = nil,
                     logitOffsets: [Float]? = nil) -> Float {
        let B = batch.count, C = head.outputs
        switch (head.objective, targets) {
        case (.softmaxCrossEntropy, .classes(let y)):
            return LossKernel.softmaxCrossEntropy(logits: ws.logits.base, rows: B, classes: C, targets: y, weights: classWeights,
                                                   offsets: logitOffsets, dLogits: ws.dLogits.base)
        case (.sigmoidBinaryCrossEntropy, .multiHot(let y)):
            precondition(classWeights == nil || classWeights!.count == C, "\(classWeights!.count) positive weights for \(C) labels")
            return LossKernel.sigmoidBinaryCrossEntropy(logits: ws.logits.base, count: B * C, targets: y, positiveWeights: classWeights,
                                                        dLogits: ws.dLogits.base)
        case (.meanSquaredError, .scores(let y)):
            return LossKernel.meanSquaredError(predictions: ws.logits.base, count: B, targets: y, dPredictions: ws.dLogits.base)
        case (.ordinal, .multiHot(let y)):
            // y holds each text's K − 1 "level > k" indicators.
            return LossKernel.sigmoidBinaryCrossEntropy(logits: ws.logits.base, count: B * C, targets: y, dLogits: ws.dLogits.base)
        default:
            preconditionFailure("targets \(targets) do not fit a \(head.objective) head")
        }
    }

    /// Forward, loss and backward: adds this batch's gradients to
    /// `gradients` (same layout as the parameters) and returns the loss.
    public func lossAndGradients(
        _ batch: PackedBatch, targets: Targets, workspace ws: BertWorkspace, gradients: ParameterBuffer,
        dropout: DropoutKey?, classWeights: [Float]? = nil, logitOffsets: [Float]? = nil
    ) -> Float {
        precondition(ws.training, "backward needs a training workspace")
        precondition(gradients.layout == layout, "gradient layout differs from the model's")
        forward(batch, workspace: ws, dropout: dropout)
        let value = loss(targets, batch: batch, workspace: ws, classWeights: classWeights, logitOffsets: logitOffsets)
        backward(batch, workspace: ws, gradients: gradients, dropout: dropout)
        return value
    }

    /// Back-propagates the workspace's logit gradients through the head and
    /// the encoder, adding into `gradients`.
    public func backward(_ batch: PackedBatch, workspace ws: BertWorkspace, gradients: ParameterBuffer, dropout: DropoutKey?) {
        let c = config, H = c.hiddenSize, N = batch.tokenCount, B = batch.count, C = head.outputs
        let g = { (offset: Int) in gradients.buffer.base + offset }
        let noDropout = DropoutMask(probability: 0, key: 0)

        let norms = ws.exampleNorms
        norms?.reset(batch, table: ws.table)

        // Head: logits = drop(pooled)·Wcᵀ + bc.
        if head.objective == .ordinal {
            ordinalHeadBackward(batch, workspace: ws, gradients: gradients)
        } else {
            if let norms {
                norms.linear(dY: ws.dLogits.base, ld: C, x: ws.pooledDropped.base, rows: B, inputs: H, outputs: C,
                             weight: offsets.classifierWeight, bias: offsets.classifierBias)
            } else {
                BLAS.gemm(transA: true, m: C, n: H, k: B, a: ws.dLogits.base, lda: C, b: ws.pooledDropped.base, ldb: H, beta: 1, c: g(offsets.classifierWeight), ldc: H)
                for b in 0..<B { for j in 0..<C { g(offsets.classifierBias)[j] += ws.dLogits[b * C + j] } }
            }
            BLAS.gemm(m: B, n: H, k: C, a: ws.dLogits.base, lda: C, b: p(offsets.classifierWeight), ldb: H, c: ws.dPooled.base, ldc: H)
        }
        dropout?.mask(c.classifierDropout ?? c.hiddenDropout, site: DropoutSite.classifier).apply(ws.dPooled.base, count: B * H)

        // Pooling back to the last hidden state.
        let dTop = ws.dHidden!
        dTop.slice(0, N * H).fill(0)
        switch head.pooling {
        case .pooler:
            let dPre = ws.dPooled.base
            if c.family.poolerUsesReLU {
                for i in 0..<(B * H) where ws.pooled[i] <= 0 { dPre[i] = 0 }
            } else {
                for i in 0..<(B * H) { dPre[i] *= 1 - ws.pooled[i] * ws.pooled[i] }
            }
            if let norms {
                norms.linear(dY: dPre, ld: H, x: ws.poolInput.base, rows: B, inputs: H, outputs: H,
                             weight: offsets.poolerWeight, bias: offsets.poolerBias)
            } else {
                BLAS.gemm(transA: true, m: H, n: H, k: B, a: dPre, lda: H, b: ws.poolInput.base, ldb: H, beta: 1, c: g(offsets.poolerWeight), ldc: H)
                for b in 0..<B { for j in 0..<H { g(offsets.poolerBias)[j] += dPre[b * H + j] } }
            }
            BLAS.gemm(m: B, n: H, k: H, a: dPre, lda: H, b: p(offsets.poolerWeight), ldb: H, c: ws.dPoolInput.base, ldc: H)
            if c.family.dropsOutBeforePooler {
                dropout?.mask(c.classifierDropout ?? c.hiddenDropout, site: DropoutSite.poolerInput).apply(ws.dPoolInput.base, count: B * H)
            }
            for b in 0..<B { (dTop.base + ws.table.offsets[b] * H).update(from: ws.dPoolInput.base + b * H, count: H) }
        case .cls:
            for b in 0..<B { (dTop.base + ws.table.offsets[b] * H).update(from: ws.dPooled.base + b * H, count: H) }
        case .mean:
            for b in 0..<B {
                let L = ws.table.lengths[b], start = ws.table.offsets[b]
                let inv = 1 / Float(L)
                let d = ws.dPooled.base + b * H
                for t in start..<(start + L) {
                    let row = dTop.base + t * H
                    for j in 0..<H { row[j] = d[j] * inv }
                }
            }
        }

        var dOut = ws.dHidden!, dIn = ws.dNext!
        for l in stride(from: c.layers - 1, through: max(ws.backwardFloor, 0), by: -1) {
            if l == c.layers - 1 && ws.lastLayerRanFirstTokensOnly {
                precondition(head.pooling != .mean, "a mean-pooling head needs every row of the last layer")
                lastLayerFirstTokensBackward(batch, workspace: ws, gradients: gradients, dropout: dropout, dTop: dOut, dInput: dIn)
                swap(&dOut, &dIn)
                continue
            }
            let o = offsets.layers[l]
            let a = ws.activations(l)
            let x = ws.input(ofLayer: l).base
            denseHalfBackward(DenseHalf(
                rows: N, context: a.context.base, residual: x, sum: ws.denseOut.base, attended: a.attentionOut.base,
                ffnPre: a.ffnPre.base, ffnAct: ws.ffnActivation.base, normalized1: a.normalized1.base, inverseStd1: a.inverseStd1.base,
                normalized2: a.normalized2.base, inverseStd2: a.inverseStd2.base, output: ws.output(ofLayer: l).base),
                layer: l, dOutput: dOut.base, dH1: ws.dResidual, dFFN: ws.dFFN.base, dInput: dIn, dContext: ws.dContext.base,
                gradients: gradients, workspace: ws, dropout: dropout)
            AttentionKernel.backward(
                qkv: a.qkv.base, hidden: H, heads: c.heads, table: ws.table, probabilities: a.probabilities.base,
                dropped: ws.dropped.base, dContext: ws.dContext.base, dProbabilities: ws.dProbabilities.base, dQKV: ws.dQKV.base,
                dropout: dropout?.mask(c.attentionDropout, site: DropoutSite.attention(l)) ?? noDropout)
            // dIn already holds the residual gradient of x; the projections add theirs.
            // Layer 0's input gradient feeds only the embeddings: not needed when they are frozen.
            let needsInput = l > 0 || ws.backwardFloor < 0
            linearBackward(dOutput: ws.dQKV.base, input: x, rows: N, inputs: H, outputs: 3 * H,
                           weight: o.qkvWeight, bias: o.qkvBias, gradients: gradients, dInput: needsInput ? dIn.base : nil, accumulate: true, workspace: ws)
            if lora != nil {
                for (k, t) in [LoRATarget.query, .key, .value].enumerated() {
                    loraBackward(t, layer: l, x: x, rows: N, dY: ws.dQKV.base + k * H, ldy: 3 * H, dX: needsInput ? dIn.base : nil,
                                 gradients: gradients, workspace: ws, dropout: dropout)
                }
            }
            swap(&dOut, &dIn)
        }

        // Below the lowest trained layer no parameter needs a gradient.
        if ws.backwardFloor >= 0 { return }

        // Embeddings: dropout, LayerNorm, then scatter into the three tables.
        dropout?.mask(c.hiddenDropout, site: DropoutSite.embeddings).apply(dOut.base, count: N * H)
        let dSum = dIn
        ws.dEmbeddingSum = dSum
        layerNormBackward(dOutput: dOut.base, normalized: ws.embeddingNormalized.base, inverseStd: ws.embeddingInverseStd.base,
                          gamma: offsets.embeddingGamma, beta: offsets.embeddingBeta, rows: N, dInput: dSum.base,
                          gradients: gradients, workspace: ws)
        if let norms {
            norms.embeddings(dSum: dSum.base, batch: batch, hidden: H, word: offsets.word, position: offsets.position,
                             tokenType: offsets.tokenType, vocabulary: c.vocabSize, positions: c.maxPositions,
                             types: c.family.hasTokenTypes ? c.typeVocabSize : 0)
            return
        }
        scatterEmbeddingGradients(dSum: dSum.base, batch: batch, workspace: ws, gradients: gradients)
    }

    /// Adds the gradient of the summed input embeddings (`dSum`, tokens × hidden) to the
    /// rows of the word, position and token-type tables each token used.
    func scatterEmbeddingGradients(dSum: UnsafePointer<Float>, batch: PackedBatch, workspace ws: BertWorkspace, gradients: ParameterBuffer) {
        let c = config, H = c.hiddenSize
        let g = { (offset: Int) in gradients.buffer.base + offset }
        let word = g(offsets.word), pos = g(offsets.position), typ = c.family.hasTokenTypes ? g(offsets.tokenType) : nil
        for t in 0..<batch.tokenCount {
            let d = dSum + t * H
            let w = word + Int(batch.tokenIDs[t]) * H, q = pos + Int(ws.positions[t]) * H
            for j in 0..<H { w[j] += d[j]; q[j] += d[j] }
            if let typ {
                let y = typ + Int(batch.typeIDs[t]) * H
                for j in 0..<H { y[j] += d[j] }
            }
        }
    }
}

extension BertModel {
    /// The pooler's weight and bias (a family's pre-classifier): used only by `.pooler` pooling.
    public var poolerTensorNames: [String] {
        layout.tensors.filter { $0.offset == offsets.poolerWeight || $0.offset == offsets.poolerBias }.map(\.name)
    }

    /// How far down backward must go for the tensors not in `frozen` to get their gradients:
    /// -1 when an embedding tensor is trained (all the way), else the lowest encoder layer
    /// with a trained tensor (`layers` when only the head is trained). Frozen lower layers
    /// then cost no backward at all.
    public func backwardFloor(frozen: Set<String>) -> Int {
        let starts = offsets.layers.map(\.qkvWeight), encoderEnd = offsets.poolerWeight
        var floor = config.layers
        // Adapters sit after the head in the layout; each trains from its own layer down.
        for (l, layer) in offsets.layers.enumerated() {
            for slot in layer.adapters.compactMap({ $0 }) {
                let names = layout.tensors.filter { $0.offset == slot.a || $0.offset == slot.b }.map(\.name)
                if names.contains(where: { !frozen.contains($0) }) { floor = min(floor, l) }
            }
        }
        for spec in layout.tensors where !frozen.contains(spec.name) && spec.offset < layout.count - loraParameterCount {
            if spec.offset < (starts.first ?? encoderEnd) { return -1 }
            if spec.offset < encoderEnd, let l = starts.lastIndex(where: { $0 <= spec.offset }) { floor = min(floor, l) }
        }
        return floor
    }

    /// Backward of `denseHalf`: from the gradient of its output (`dOutput`), adds the
    /// half's parameter gradients, writes the gradient of the attention context into
    /// `dContext` and the residual gradient of the layer input into `dInput`. `dH1` and
    /// `dFFN` are scratch of `rows × hidden` and `rows × intermediate` floats.
    func denseHalfBackward(
        _ t: DenseHalf, layer l: Int, dOutput: UnsafePointer<Float>, dH1: FloatBuffer, dFFN: UnsafeMutablePointer<Float>,
        dInput: FloatBuffer, dContext: UnsafeMutablePointer<Float>, gradients: ParameterBuffer, workspace ws: BertWorkspace,
        dropout: DropoutKey?
    ) {
        let c = config, H = c.hiddenSize, I = c.intermediateSize, o = offsets.layers[l], rows = t.rows
        // Output LayerNorm; its input was drop(ffn + b2) + h1, so dH1 is also h1's residual gradient.
        layerNormBackward(dOutput: dOutput, normalized: t.normalized2!, inverseStd: t.inverseStd2, gamma: o.norm2Gamma, beta: o.norm2Beta,
                          rows: rows, dInput: dH1.base, gradients: gradients, workspace: ws)
        let dFFNOut = throughDropout(dH1, count: rows * H, mask: dropout?.mask(c.hiddenDropout, site: DropoutSite.ffnOutput(l)), scratch: ws.dDropped)
        // ffn = act(h1·W1ᵀ + b1)·W2ᵀ + b2; the activation is recomputed from its input.
        Elementwise.activation(t.ffnPre, count: rows * I, activation: c.activation, output: t.ffnAct)
        linearBackward(dOutput: dFFNOut, input: t.ffnAct, rows: rows, inputs: I, outputs: H,
                       weight: o.ffnOutWeight, bias: o.ffnOutBias, gradients: gradients, dInput: dFFN, accumulate: false, workspace: ws,
                       bookInput: .activated(pre: t.ffnPre, activation: c.activation, into: t.ffnAct))
        loraBackward(.output, layer: l, x: t.ffnAct, rows: rows, dY: dFFNOut, ldy: H, dX: dFFN, gradients: gradients, workspace: ws, dropout: dropout,
                     bookInput: .activated(pre: t.ffnPre, activation: c.activation, into: t.ffnAct))
        Elementwise.activationBackward(dFFN, pre: t.ffnPre, count: rows * I, activation: c.activation)
        linearBackward(dOutput: dFFN, input: t.attended, rows: rows, inputs: H, outputs: I,
                       weight: o.ffnInWeight, bias: o.ffnInBias, gradients: gradients, dInput: dH1.base, accumulate: true, workspace: ws)
        loraBackward(.intermediate, layer: l, x: t.attended, rows: rows, dY: dFFN, ldy: I, dX: dH1.base, gradients: gradients, workspace: ws, dropout: dropout)
        // Attention LayerNorm; its input was drop(attn + bo) + x.
        layerNormBackward(dOutput: dH1.base, normalized: t.normalized1!, inverseStd: t.inverseStd1, gamma: o.norm1Gamma, beta: o.norm1Beta,
                          rows: rows, dInput: dInput.base, gradients: gradients, workspace: ws)
        let dAttnOut = throughDropout(dInput, count: rows * H, mask: dropout?.mask(c.attentionOutputDropout, site: DropoutSite.attentionOutput(l)), scratch: ws.dDropped)
        linearBackward(dOutput: dAttnOut, input: t.context, rows: rows, inputs: H, outputs: H,
                       weight: o.attentionOutWeight, bias: o.attentionOutBias, gradients: gradients, dInput: dContext, accumulate: false, workspace: ws)
        loraBackward(.attentionOutput, layer: l, x: t.context, rows: rows, dY: dAttnOut, ldy: H, dX: dContext, gradients: gradients, workspace: ws, dropout: dropout)
    }

    /// Backward of `y = x·Wᵀ + b` over `rows` rows: adds `dW = dYᵀ·x` and
    /// `db = Σ dY` into `gradients`, and writes (or, with `accumulate`, adds)
    /// `dX = dY·W` into `dInput` (nil: not needed). `weight` and `bias` are parameter
    /// offsets; `outputStride` is dY's row stride when it is a column block of a wider
    /// matrix. Rows of the weight (and bias elements) in the workspace's frozen ranges get
    /// no gradient: their GEMMs are skipped, not computed and discarded. In norm mode
    /// `bookInput` tells the book where `input` will be (default: where it is).
    @inline(__always)
    func linearBackward(
        dOutput: UnsafePointer<Float>, outputStride: Int? = nil, input: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
        weight: Int, bias: Int, gradients: ParameterBuffer, dInput: UnsafeMutablePointer<Float>?, accumulate: Bool,
        workspace ws: BertWorkspace, bookInput: GradientBook.Input? = nil
    ) {
        let ld = outputStride ?? outputs
        if let norms = ws.exampleNorms {
            norms.linear(dY: dOutput, ld: ld, x: input, rows: rows, inputs: inputs, outputs: outputs, weight: weight, bias: bias,
                         input: bookInput)
        } else {
            addLinearGradients(dOutput: dOutput, ld: ld, input: input, rows: rows, inputs: inputs, outputs: outputs,
                               weight: weight, bias: bias, gradients: gradients, workspace: ws)
        }
        guard let dInput else { return }
        BLAS.gemm(m: rows, n: inputs, k: outputs, a: dOutput, lda: ld, b: p(weight), ldb: inputs, beta: accumulate ? 1 : 0, c: dInput, ldc: inputs)
    }

    /// The parameter half of `linearBackward`: adds `dW = dYᵀ·x` and `db = Σ dY` (no bias:
    /// nil) into `gradients`, skipping the workspace's frozen ranges.
    func addLinearGradients(
        dOutput: UnsafePointer<Float>, ld: Int, input: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
        weight: Int, bias: Int?, gradients: ParameterBuffer, workspace ws: BertWorkspace
    ) {
        let g = gradients.buffer.base
        if ws.frozenRanges.isEmpty {
            if let bias { BLAS.gemv(trans: true, m: rows, n: outputs, a: dOutput, lda: ld, x: ws.ones.base, beta: 1, y: g + bias) }
            BLAS.gemm(transA: true, m: outputs, n: inputs, k: rows, a: dOutput, lda: ld, b: input, ldb: inputs, beta: 1, c: g + weight, ldc: inputs)
        } else {
            // Runs of output columns that are all trained or all frozen (a fused block's tensors may differ).
            var c = 0
            while let bias, c < outputs {
                let (trained, end) = ws.trainedRun(from: bias + c, limit: bias + outputs)
                let n = end - (bias + c)
                if trained { BLAS.gemv(trans: true, m: rows, n: n, a: dOutput + c, lda: ld, x: ws.ones.base, beta: 1, y: g + bias + c) }
                c += n
            }
            var r = 0
            while r < outputs {
                let start = weight + r * inputs
                let (trained, end) = ws.trainedRun(from: start, limit: weight + outputs * inputs)
                let n = max(1, (end - start) / inputs)
                if trained {
                    BLAS.gemm(transA: true, m: n, n: inputs, k: rows, a: dOutput + r, lda: ld, b: input, ldb: inputs, beta: 1, c: g + start, ldc: inputs)
                }
                r += n
            }
        }
    }

    /// LayerNorm's backward: writes `dInput` and adds γ's and β's gradients (parameter
    /// offsets `gamma`, `beta`), or in norm mode their per-example norms.
    func layerNormBackward(
        dOutput: UnsafePointer<Float>, normalized: UnsafePointer<Float>, inverseStd: UnsafePointer<Float>, gamma: Int, beta: Int,
        rows: Int, dInput: UnsafeMutablePointer<Float>, gradients: ParameterBuffer, workspace ws: BertWorkspace
    ) {
        let H = config.hiddenSize, g = gradients.buffer.base
        var dGamma = g + gamma, dBeta = g + beta
        if !ws.frozenRanges.isEmpty, !ws.trainedRun(from: gamma, limit: gamma + H).trained, !ws.trainedRun(from: beta, limit: beta + H).trained {
            // Frozen (as under LoRA): the kernel's γ and β sums go to scratch, not the gradients.
            dGamma = ws.normDiscard.base
            dBeta = dGamma + H
        }
        if let norms = ws.exampleNorms {
            norms.layerNorm(dY: dOutput, normalized: normalized, rows: rows, cols: H, gamma: gamma, beta: beta)
            dGamma = norms.discard.buffer.base
            dBeta = dGamma + H
        }
        LayerNormKernel.backward(dOutput: dOutput, normalized: normalized, inverseStd: inverseStd, gamma: p(gamma), rows: rows, cols: H,
                                 dInput: dInput, dGamma: dGamma, dBeta: dBeta, scratch: ws.normScratch)
    }

    /// The gradient through a dropout mask: `grad` itself when dropout is
    /// off, else a masked copy in `scratch` (the residual path keeps `grad`).
    @inline(__always)
    func throughDropout(_ grad: FloatBuffer, count: Int, mask: DropoutMask?, scratch: FloatBuffer) -> UnsafeMutablePointer<Float> {
        guard let mask, mask.isActive else { return grad.base }
        scratch.slice(0, count).copy(from: grad.slice(0, count))
        mask.apply(scratch.base, count: count)
        return scratch.base
    }
}

extension BertModel {
    /// Gradient × input saliency of each token for a quantity `f` whose
    /// gradient with respect to the logits the caller gives (`logitGradients`,
    /// `batch.count × head.outputs`): e.g. a one-hot row for a logit, or
    /// `onehot − p` for a class's log-probability. Returns, per packed token,
    /// `Σⱼ (∂f/∂wₜⱼ) · wₜⱼ` where `wₜ` is the token's word embedding.
    ///
    /// The word embedding is the input, not the summed embedding: the
    /// embedding LayerNorm is scale-invariant, so the gradient is orthogonal
    /// to the sum and that product is identically zero. Gradient × input is
    /// used (rather than attention rollout) because it follows the head being
    /// explained and is exact to first order.
    public func attributions(_ batch: PackedBatch, logitGradients: [Float], workspace ws: BertWorkspace) -> [Float] {
        precondition(ws.training, "attributions need a training workspace (activations are kept)")
        let H = config.hiddenSize, C = head.outputs
        precondition(logitGradients.count == batch.count * C, "one gradient per sequence and output")
        forward(batch, workspace: ws, dropout: nil)
        for i in logitGradients.indices { ws.dLogits[i] = logitGradients[i] }
        let scratch = ParameterBuffer(layout: layout)
        backward(batch, workspace: ws, gradients: scratch, dropout: nil)
        let d = ws.dEmbeddingSum!
        let word = p(offsets.word)
        var result = [Float](repeating: 0, count: batch.tokenCount)
        for t in 0..<batch.tokenCount {
            let w = word + Int(batch.tokenIDs[t]) * H
            var s: Float = 0
            for j in 0..<H { s += d[t * H + j] * w[j] }
            result[t] = s
        }
        return result
    }
}
