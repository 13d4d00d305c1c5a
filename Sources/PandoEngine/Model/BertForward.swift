import Foundation

extension BertModel {
    /// Runs the encoder and the head on `batch`; returns the logits
    /// (`batch.count × head.outputs`, row-major), valid until the workspace
    /// is used again. `dropout` nil means evaluation mode.
    @discardableResult
    public func forward(_ batch: PackedBatch, workspace ws: BertWorkspace, dropout: DropoutKey? = nil) -> FloatBuffer {
        // The pooler and CLS heads read one row per sequence, so the last layer runs its
        // queries, output projection and feed-forward for that row only (and backward
        // follows: the other rows have no gradient).
        encode(batch, workspace: ws, dropout: dropout, firstTokensOnly: head.pooling != .mean)
        return classify(batch, workspace: ws, dropout: dropout)
    }

    /// Runs the encoder only and returns the last hidden state for the
    /// packed tokens (`tokenCount × hidden`).
    ///
    /// With `firstTokensOnly`, the last layer computes keys and values for
    /// every token but the rest of the layer only for each sequence's first
    /// token: that row of the result is exact, the other rows are left
    /// unspecified. It saves about 5/6 of the last layer for heads that pool
    /// the first token; `backward` follows whichever way the forward pass ran.
    @discardableResult
    public func encode(_ batch: PackedBatch, workspace ws: BertWorkspace, dropout: DropoutKey? = nil,
                       firstTokensOnly: Bool = false) -> FloatBuffer {
        let c = config, H = c.hiddenSize, N = batch.tokenCount
        check(batch, fits: ws)
        ws.table.reset(lengths: batch.lengths, heads: c.heads)
        ws.lastLayerRanFirstTokensOnly = firstTokensOnly
        ws.positions.removeAll(keepingCapacity: true)
        // Position ids count from the family's offset (RoBERTa: after the padding index).
        let first = c.positionOffset
        for length in batch.lengths { for p in 0..<length { ws.positions.append(Int32(first + p)) } }

        // Embeddings: word + position + token type (none in DistilBERT), LayerNorm, dropout.
        let sum = ws.denseOut!.base
        batch.tokenIDs.withUnsafeBufferPointer { ids in
            batch.typeIDs.withUnsafeBufferPointer { types in
                ws.positions.withUnsafeBufferPointer { positions in
                    let box = UnsafeSendableBox((ids, types, positions))
                    let word = p(offsets.word), pos = p(offsets.position)
                    let typ = c.family.hasTokenTypes ? p(offsets.tokenType) : nil
                    let q8 = ws.int8?.encoder.embeddings
                    Parallel.forRanges(N, minimumChunk: 128) { range in
                        let (ids, types, positions) = box.value
                        for t in range {
                            let q = pos + Int(positions[t]) * H
                            let out = sum + t * H
                            if let q8 {
                                out.update(from: q, count: H)
                                q8.add(row: Int(ids[t]), to: out)
                            } else {
                                let w = word + Int(ids[t]) * H
                                for j in 0..<H { out[j] = w[j] + q[j] }
                            }
                            if let typ {
                                let y = typ + Int(types[t]) * H
                                for j in 0..<H { out[j] += y[j] }
                            }
                        }
                    }
                }
            }
        }
        let x0 = ws.input(ofLayer: 0).base
        LayerNormKernel.forward(
            input: sum, rows: N, cols: H, gamma: p(offsets.embeddingGamma), beta: p(offsets.embeddingBeta), eps: c.layerNormEps,
            normalized: ws.training ? ws.embeddingNormalized.base : nil, inverseStd: ws.embeddingInverseStd.base, output: x0)
        dropout?.mask(c.hiddenDropout, site: DropoutSite.embeddings).apply(x0, count: N * H)

        for l in 0..<c.layers {
            if firstTokensOnly && l == c.layers - 1 {
                lastLayerFirstTokens(batch, workspace: ws, dropout: dropout)
                break
            }
            let o = offsets.layers[l]
            let a = ws.activations(l)
            let x = ws.input(ofLayer: l).base
            let out = ws.output(ofLayer: l).base
            let q8 = ws.int8.map { ($0.encoder.layers[l], $0.scratch) }
            // Q, K, V in one GEMM: qkv = x·Wᵀ + b.
            if let (q, scratch) = q8 {
                q.qkv.apply(x, rows: N, bias: p(o.qkvBias), into: a.qkv.base, scratch: scratch)
            } else {
                BLAS.gemm(transB: true, m: N, n: 3 * H, k: H, a: x, lda: H, b: p(o.qkvWeight), ldb: H, bias: p(o.qkvBias), c: a.qkv.base, ldc: 3 * H)
                if lora != nil {
                    for (k, t) in [LoRATarget.query, .key, .value].enumerated() {
                        loraForward(t, layer: l, x: x, rows: N, y: a.qkv.base + k * H, ldy: 3 * H, workspace: ws, dropout: dropout)
                    }
                }
            }
            AttentionKernel.forward(
                qkv: a.qkv.base, hidden: H, heads: c.heads, table: ws.table,
                probabilities: a.probabilities.base, dropped: ws.dropped.base, context: a.context.base,
                dropout: dropout?.mask(c.attentionDropout, site: DropoutSite.attention(l)) ?? DropoutMask(probability: 0, key: 0))
            denseHalf(DenseHalf(
                rows: N, context: a.context.base, residual: x, sum: sum, attended: a.attentionOut.base,
                ffnPre: a.ffnPre.base, ffnAct: ws.ffnActivation.base,
                normalized1: ws.training ? a.normalized1.base : nil, inverseStd1: a.inverseStd1.base,
                normalized2: ws.training ? a.normalized2.base : nil, inverseStd2: a.inverseStd2.base, output: out),
                layer: l, workspace: ws, dropout: dropout)
        }
        return ws.lastHidden.slice(0, N * H)
    }

    /// The half of a layer after attention, over `rows` rows: every token, or one
    /// row per sequence in the first-token pass. `sum` is scratch.
    struct DenseHalf {
        var rows: Int
        var context: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>, sum: UnsafeMutablePointer<Float>
        var attended: UnsafeMutablePointer<Float>, ffnPre: UnsafeMutablePointer<Float>, ffnAct: UnsafeMutablePointer<Float>
        /// x̂ of the two LayerNorms: kept for backward when training, nil otherwise.
        var normalized1: UnsafeMutablePointer<Float>?, inverseStd1: UnsafeMutablePointer<Float>
        var normalized2: UnsafeMutablePointer<Float>?, inverseStd2: UnsafeMutablePointer<Float>
        var output: UnsafeMutablePointer<Float>
    }

    /// Attention output projection, dropout, residual, LayerNorm; then the feed-forward
    /// block activation(h·W1ᵀ + b1)·W2ᵀ + b2, dropout, residual, LayerNorm.
    func denseHalf(_ t: DenseHalf, layer l: Int, workspace ws: BertWorkspace, dropout: DropoutKey?) {
        let c = config, H = c.hiddenSize, I = c.intermediateSize, o = offsets.layers[l]
        let inactive = DropoutMask(probability: 0, key: 0)
        let q8 = ws.int8.map { ($0.encoder.layers[l], $0.scratch) }
        if let (q, scratch) = q8 {
            q.attentionOut.apply(t.context, rows: t.rows, bias: nil, into: t.sum, scratch: scratch)
        } else {
            BLAS.gemm(transB: true, m: t.rows, n: H, k: H, a: t.context, lda: H, b: p(o.attentionOutWeight), ldb: H, c: t.sum, ldc: H)
            loraForward(.attentionOutput, layer: l, x: t.context, rows: t.rows, y: t.sum, ldy: H, workspace: ws, dropout: dropout)
        }
        residualLayerNorm(
            t.sum, bias: p(o.attentionOutBias), residual: t.residual, rows: t.rows,
            dropout: dropout?.mask(c.attentionOutputDropout, site: DropoutSite.attentionOutput(l)) ?? inactive,
            gamma: p(o.norm1Gamma), beta: p(o.norm1Beta), normalized: t.normalized1, inverseStd: t.inverseStd1, output: t.attended)
        // The bias goes in as the product is stored, so the activation pass only reads the
        // pre-activation (backward needs it) and writes its output.
        if let (q, scratch) = q8 {
            q.ffnIn.apply(t.attended, rows: t.rows, bias: p(o.ffnInBias), into: t.ffnPre, scratch: scratch)
        } else {
            BLAS.gemm(transB: true, m: t.rows, n: I, k: H, a: t.attended, lda: H, b: p(o.ffnInWeight), ldb: H,
                      bias: p(o.ffnInBias), c: t.ffnPre, ldc: I)
            loraForward(.intermediate, layer: l, x: t.attended, rows: t.rows, y: t.ffnPre, ldy: I, workspace: ws, dropout: dropout)
        }
        Elementwise.activation(t.ffnPre, rows: t.rows, cols: I, activation: c.activation, output: t.ffnAct)
        if let (q, scratch) = q8 {
            q.ffnOut.apply(t.ffnAct, rows: t.rows, bias: nil, into: t.sum, scratch: scratch)
        } else {
            BLAS.gemm(transB: true, m: t.rows, n: H, k: I, a: t.ffnAct, lda: I, b: p(o.ffnOutWeight), ldb: I, c: t.sum, ldc: H)
            loraForward(.output, layer: l, x: t.ffnAct, rows: t.rows, y: t.sum, ldy: H, workspace: ws, dropout: dropout)
        }
        residualLayerNorm(
            t.sum, bias: p(o.ffnOutBias), residual: t.attended, rows: t.rows,
            dropout: dropout?.mask(c.hiddenDropout, site: DropoutSite.ffnOutput(l)) ?? inactive,
            gamma: p(o.norm2Gamma), beta: p(o.norm2Beta), normalized: t.normalized2, inverseStd: t.inverseStd2, output: t.output)
    }

    /// output = LayerNorm(dropout(x + bias) + residual). Without dropout the sum is formed
    /// inside the LayerNorm kernel and never written out (inference and evaluation); with it,
    /// `x` is overwritten by the sum first.
    private func residualLayerNorm(
        _ x: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, residual: UnsafePointer<Float>, rows: Int,
        dropout: DropoutMask, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>?, inverseStd: UnsafeMutablePointer<Float>?, output: UnsafeMutablePointer<Float>
    ) {
        let H = config.hiddenSize
        if dropout.isActive {
            Elementwise.biasDropoutResidual(x, bias: bias, residual: residual, rows: rows, cols: H, dropout: dropout)
            LayerNormKernel.forward(input: x, rows: rows, cols: H, gamma: gamma, beta: beta, eps: config.layerNormEps,
                                    normalized: normalized, inverseStd: inverseStd, output: output)
        } else {
            LayerNormKernel.forward(input: x, adding: (bias, residual), rows: rows, cols: H, gamma: gamma, beta: beta,
                                    eps: config.layerNormEps, normalized: normalized, inverseStd: inverseStd, output: output)
        }
    }

    /// Pools the last hidden state and applies the head; returns the logits.
    @discardableResult
    public func classify(_ batch: PackedBatch, workspace ws: BertWorkspace, dropout: DropoutKey? = nil) -> FloatBuffer {
        let H = config.hiddenSize, B = batch.count, C = head.outputs
        pool(batch, workspace: ws, dropout: dropout)
        ws.pooledDropped.slice(0, B * H).copy(from: ws.pooled.slice(0, B * H))
        dropout?.mask(config.classifierDropout ?? config.hiddenDropout, site: DropoutSite.classifier).apply(ws.pooledDropped.base, count: B * H)
        Elementwise.broadcastRows(p(offsets.classifierBias), rows: B, cols: C, into: ws.logits.base)
        if head.objective == .ordinal {
            // One shared score per text, added to every threshold's bias.
            let w = p(offsets.classifierWeight), x = ws.pooledDropped.base, logits = ws.logits.base
            for b in 0..<B {
                var z: Float = 0
                for j in 0..<H { z += x[b * H + j] * w[j] }
                for k in 0..<C { logits[b * C + k] += z }
            }
        } else {
            BLAS.gemm(transB: true, m: B, n: C, k: H, a: ws.pooledDropped.base, lda: H, b: p(offsets.classifierWeight), ldb: H, beta: 1, c: ws.logits.base, ldc: C)
        }
        return ws.logits.slice(0, B * C)
    }

    /// The pooled sequence vectors (`count × hidden`) for the head's pooling. `dropout`
    /// matters only to RoBERTa's head, which drops out `<s>` before its dense layer.
    @discardableResult
    public func pool(_ batch: PackedBatch, workspace ws: BertWorkspace, pooling: Pooling? = nil, dropout: DropoutKey? = nil) -> FloatBuffer {
        let H = config.hiddenSize, B = batch.count
        let last = ws.lastHidden.base
        precondition((pooling ?? head.pooling) != .mean || !ws.lastLayerRanFirstTokensOnly,
                     "mean pooling needs every row of the last layer; call encode without firstTokensOnly")
        switch pooling ?? head.pooling {
        case .pooler, .cls:
            for b in 0..<B { (ws.poolInput.base + b * H).update(from: last + ws.table.offsets[b] * H, count: H) }
            if (pooling ?? head.pooling) == .pooler {
                if config.family.dropsOutBeforePooler {
                    dropout?.mask(config.classifierDropout ?? config.hiddenDropout, site: DropoutSite.poolerInput).apply(ws.poolInput.base, count: B * H)
                }
                BLAS.gemm(transB: true, m: B, n: H, k: H, a: ws.poolInput.base, lda: H, b: p(offsets.poolerWeight), ldb: H, c: ws.pooled.base, ldc: H)
                if config.family.poolerUsesReLU {
                    Elementwise.biasActivation(ws.pooled.base, bias: p(offsets.poolerBias), rows: B, cols: H, activation: .relu, output: ws.pooled.base)
                } else {
                    Elementwise.biasTanh(ws.pooled.base, bias: p(offsets.poolerBias), rows: B, cols: H)
                }
            } else {
                ws.pooled.slice(0, B * H).copy(from: ws.poolInput.slice(0, B * H))
            }
        case .mean:
            for b in 0..<B {
                let out = ws.pooled.base + b * H
                out.update(repeating: 0, count: H)
                let L = ws.table.lengths[b], start = ws.table.offsets[b]
                for t in start..<(start + L) {
                    let row = last + t * H
                    for j in 0..<H { out[j] += row[j] }
                }
                let inv = 1 / Float(max(L, 1))
                for j in 0..<H { out[j] *= inv }
            }
        }
        return ws.pooled.slice(0, B * H)
    }

    func check(_ batch: PackedBatch, fits ws: BertWorkspace) {
        precondition(batch.count <= ws.capacity.sequences, "batch of \(batch.count) sequences exceeds the workspace's \(ws.capacity.sequences)")
        precondition(batch.tokenCount <= ws.capacity.tokens, "batch of \(batch.tokenCount) tokens exceeds the workspace's \(ws.capacity.tokens)")
        precondition(batch.maxLength <= ws.capacity.length, "sequence of \(batch.maxLength) tokens exceeds the workspace's \(ws.capacity.length)")
        precondition(batch.lengths.allSatisfy { $0 > 0 }, "empty sequence in batch")
        let V = Int32(config.vocabSize), T = Int32(config.typeVocabSize)
        precondition(batch.tokenIDs.allSatisfy { $0 >= 0 && $0 < V }, "token id outside the vocabulary of \(V)")
        if config.family.hasTokenTypes {
            precondition(batch.typeIDs.allSatisfy { $0 >= 0 && $0 < T }, "token type outside 0..<\(T)")
        }
    }
}
