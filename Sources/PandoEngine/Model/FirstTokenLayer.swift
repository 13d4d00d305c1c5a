import CPandoKernels
import Foundation

/// Compact one-row-per-sequence matrices for the last layer when only each
/// sequence's first token is needed (pooler and CLS heads): the pooled rows,
/// their queries and everything after attention, plus what backward needs.
struct FirstTokenBuffers {
    let x, q, context, sum, attended, out: FloatBuffer        // [B, H]
    let ffnPre, ffnAct: FloatBuffer                           // [B, I]
    let normalized1, normalized2: FloatBuffer                 // [B, H], training only
    let inverseStd1, inverseStd2: FloatBuffer                 // [B]
    let dOut, dH1, dX, dContext, dQ: FloatBuffer              // [B, H], training only
    let dFFN: FloatBuffer                                     // [B, I], training only

    static func floats(sequences B: Int, hidden H: Int, intermediate I: Int, training: Bool) -> Int {
        B * (6 * H + 2 * I + 2) + (training ? B * (7 * H + I) : 0)
    }

    /// The compact rows as the after-attention half of a layer.
    func denseHalf(rows: Int, training: Bool) -> BertModel.DenseHalf {
        BertModel.DenseHalf(
            rows: rows, context: context.base, residual: x.base, sum: sum.base, attended: attended.base,
            ffnPre: ffnPre.base, ffnAct: ffnAct.base, normalized1: training ? normalized1.base : nil, inverseStd1: inverseStd1.base,
            normalized2: training ? normalized2.base : nil, inverseStd2: inverseStd2.base, output: out.base)
    }

    /// Views for `rows` sequences into `storage` (sized by `floats` for at least as many).
    init(_ storage: FloatBuffer, rows B: Int, hidden H: Int, intermediate I: Int, training: Bool) {
        var offset = 0
        func take(_ count: Int) -> FloatBuffer {
            defer { offset += count }
            return storage.slice(offset, count)
        }
        x = take(B * H); q = take(B * H); context = take(B * H); sum = take(B * H); attended = take(B * H); out = take(B * H)
        ffnPre = take(B * I); ffnAct = take(B * I)
        inverseStd1 = take(B); inverseStd2 = take(B)
        let t = training ? 1 : 0
        normalized1 = take(t * B * H); normalized2 = take(t * B * H)
        dOut = take(t * B * H); dH1 = take(t * B * H); dX = take(t * B * H); dContext = take(t * B * H); dQ = take(t * B * H)
        dFFN = take(t * B * I)
    }
}

extension BertModel {
    func firstTokenBuffers(_ ws: BertWorkspace, rows: Int) -> FirstTokenBuffers {
        FirstTokenBuffers(ws.firstTokens, rows: rows, hidden: config.hiddenSize, intermediate: config.intermediateSize, training: ws.training)
    }

    /// The last encoder layer for the first token of each sequence: keys and
    /// values for all tokens, then one query row per sequence through
    /// attention, the output projection and the feed-forward block, on compact
    /// `count × hidden` matrices. Writes each result to the sequence's first
    /// row of the last hidden state.
    func lastLayerFirstTokens(_ batch: PackedBatch, workspace ws: BertWorkspace, dropout: DropoutKey?) {
        let c = config, H = c.hiddenSize, N = batch.tokenCount, B = batch.count
        let l = c.layers - 1, o = offsets.layers[l], a = ws.activations(l)
        let x = ws.input(ofLayer: l).base, out = ws.output(ofLayer: l).base, qkv = a.qkv.base
        let starts = ws.table.offsets
        let f = firstTokenBuffers(ws, rows: B)
        for b in 0..<B { (f.x.base + b * H).update(from: x + starts[b] * H, count: H) }

        if let q8 = ws.int8 {
            q8.encoder.layers[l].qkv.apply(x, rows: N, bias: p(o.qkvBias), into: qkv, scratch: q8.scratch)
            for b in 0..<B { (f.q.base + b * H).update(from: qkv + starts[b] * 3 * H, count: H) }
        } else {
            // Keys and values of every token: rows H..<3H of the fused weight.
            BLAS.gemm(transB: true, m: N, n: 2 * H, k: H, a: x, lda: H, b: p(o.qkvWeight) + H * H, ldb: H,
                      bias: p(o.qkvBias) + H, c: qkv + H, ldc: 3 * H)
            BLAS.gemm(transB: true, m: B, n: H, k: H, a: f.x.base, lda: H, b: p(o.qkvWeight), ldb: H, bias: p(o.qkvBias), c: f.q.base, ldc: H)
            loraForward(.key, layer: l, x: x, rows: N, y: qkv + H, ldy: 3 * H, workspace: ws, dropout: dropout)
            loraForward(.value, layer: l, x: x, rows: N, y: qkv + 2 * H, ldy: 3 * H, workspace: ws, dropout: dropout)
            loraForward(.query, layer: l, x: f.x.base, rows: B, y: f.q.base, ldy: H, workspace: ws, dropout: dropout)
        }
        AttentionKernel.forwardFirstQuery(
            queries: f.q.base, qkv: qkv, hidden: H, heads: c.heads, table: ws.table,
            probabilities: a.probabilities.base, stride: ws.capacity.length, dropped: ws.dropped.base, context: f.context.base,
            dropout: dropout?.mask(c.attentionDropout, site: DropoutSite.attention(l)) ?? DropoutMask(probability: 0, key: 0))

        denseHalf(f.denseHalf(rows: B, training: ws.training), layer: l, workspace: ws, dropout: dropout)
        for b in 0..<B { (out + starts[b] * H).update(from: f.out.base + b * H, count: H) }
    }

    /// Backward of `lastLayerFirstTokens`: reads the gradient of each
    /// sequence's first row from `dTop`, adds the layer's parameter gradients
    /// and writes the gradient of the layer's input, every token, into `dInput`.
    func lastLayerFirstTokensBackward(
        _ batch: PackedBatch, workspace ws: BertWorkspace, gradients: ParameterBuffer, dropout: DropoutKey?,
        dTop: FloatBuffer, dInput: FloatBuffer
    ) {
        let c = config, H = c.hiddenSize, N = batch.tokenCount, B = batch.count
        let l = c.layers - 1, o = offsets.layers[l], a = ws.activations(l)
        let x = ws.input(ofLayer: l).base
        let starts = ws.table.offsets
        let f = firstTokenBuffers(ws, rows: B)
        for b in 0..<B { (f.dOut.base + b * H).update(from: dTop.base + starts[b] * H, count: H) }

        denseHalfBackward(f.denseHalf(rows: B, training: true), layer: l, dOutput: f.dOut.base, dH1: f.dH1, dFFN: f.dFFN.base,
                          dInput: f.dX, dContext: f.dContext.base, gradients: gradients, workspace: ws, dropout: dropout)
        // The probabilities buffer is shared by all layers and the backward of the earlier
        // ones recomputes theirs into it, so redraw this layer's first-query rows (B·heads·L·d
        // multiply-adds): a second backward over the same forward, as DP-SGD's clipping
        // runs, then reads this layer's probabilities, not layer 0's.
        AttentionKernel.forwardFirstQuery(
            queries: f.q.base, qkv: a.qkv.base, hidden: H, heads: c.heads, table: ws.table,
            probabilities: a.probabilities.base, stride: ws.capacity.length, dropped: ws.dropped.base, context: f.context.base,
            dropout: dropout?.mask(c.attentionDropout, site: DropoutSite.attention(l)) ?? DropoutMask(probability: 0, key: 0))
        AttentionKernel.backwardFirstQuery(
            queries: f.q.base, qkv: a.qkv.base, hidden: H, heads: c.heads, table: ws.table,
            probabilities: a.probabilities.base, stride: ws.capacity.length, dropped: ws.dropped.base,
            dContext: f.dContext.base, dProbabilities: ws.dProbabilities.base, dQueries: f.dQ.base, dQKV: ws.dQKV.base,
            dropout: dropout?.mask(c.attentionDropout, site: DropoutSite.attention(l)) ?? DropoutMask(probability: 0, key: 0))
        // Keys and values: every token; queries: the first rows, whose input gradient
        // joins the residual one already in dX.
        linearBackward(dOutput: ws.dQKV.base + H, outputStride: 3 * H, input: x, rows: N, inputs: H, outputs: 2 * H,
                       weight: o.qkvWeight + H * H, bias: o.qkvBias + H, gradients: gradients, dInput: dInput.base, accumulate: false, workspace: ws)
        loraBackward(.key, layer: l, x: x, rows: N, dY: ws.dQKV.base + H, ldy: 3 * H, dX: dInput.base, gradients: gradients, workspace: ws, dropout: dropout)
        loraBackward(.value, layer: l, x: x, rows: N, dY: ws.dQKV.base + 2 * H, ldy: 3 * H, dX: dInput.base, gradients: gradients, workspace: ws, dropout: dropout)
        linearBackward(dOutput: f.dQ.base, input: f.x.base, rows: B, inputs: H, outputs: H,
                       weight: o.qkvWeight, bias: o.qkvBias, gradients: gradients, dInput: f.dX.base, accumulate: true, workspace: ws)
        loraBackward(.query, layer: l, x: f.x.base, rows: B, dY: f.dQ.base, ldy: H, dX: f.dX.base, gradients: gradients, workspace: ws, dropout: dropout)
        for b in 0..<B {
            let row = dInput.base + starts[b] * H, d = f.dX.base + b * H
            for j in 0..<H { row[j] += d[j] }
        }
    }
}

extension AttentionKernel {
    /// Attention of one query row per sequence (its first token) over all of
    /// the sequence's keys and values. `queries` and `context` are compact
    /// `count × hidden`; the probabilities of pair (sequence b, head h) go to
    /// `probabilities + (b·heads + h)·stride` (and, with dropout, the dropped
    /// ones to the same place in `dropped`). Dropout draws the mask elements
    /// of the full layer's first query row, so the mask depends on the batch,
    /// never on the workspace's capacity.
    static func forwardFirstQuery(
        queries: UnsafePointer<Float>, qkv: UnsafePointer<Float>, hidden: Int, heads: Int, table: SequenceTable,
        probabilities: UnsafeMutablePointer<Float>, stride: Int, dropped: UnsafeMutablePointer<Float>,
        context: UnsafeMutablePointer<Float>, dropout: DropoutMask
    ) {
        let d = hidden / heads, ld = 3 * hidden
        let scale = 1 / Float(d).squareRoot()
        let offsets = table.offsets, lengths = table.lengths, maskOffsets = table.probabilityOffsets
        let box = UnsafeSendableBox((queries, qkv, probabilities, dropped, context))
        Parallel.forEach(table.count * heads) { pair in
            let (queries, qkv, probabilities, dropped, context) = box.value
            let b = pair / heads, h = pair % heads, L = lengths[b], mask = maskOffsets[b] + h * L * L
            let rows = qkv + offsets[b] * ld
            let P = probabilities + pair * stride
            BLAS.gemv(trans: false, m: L, n: d, alpha: scale, a: rows + hidden + h * d, lda: ld,
                      x: queries + b * hidden + h * d, beta: 0, y: P)
            pando_softmax_rows(P, 1, Int32(L), Int32(L))
            var used = UnsafePointer(P)
            if dropout.isActive {
                let D = dropped + pair * stride
                for j in 0..<L { D[j] = P[j] * dropout.factor(mask + j) }
                used = UnsafePointer(D)
            }
            BLAS.gemv(trans: true, m: L, n: d, a: rows + 2 * hidden + h * d, lda: ld, x: used, beta: 0,
                      y: context + b * hidden + h * d)
        }
    }

    /// Backward of `forwardFirstQuery`: writes the compact query gradients
    /// `dQueries` and the key and value columns of `dQKV` for every token.
    /// `dProbabilities` is scratch laid out like the probabilities.
    static func backwardFirstQuery(
        queries: UnsafePointer<Float>, qkv: UnsafePointer<Float>, hidden: Int, heads: Int, table: SequenceTable,
        probabilities: UnsafePointer<Float>, stride: Int, dropped: UnsafePointer<Float>,
        dContext: UnsafePointer<Float>, dProbabilities: UnsafeMutablePointer<Float>,
        dQueries: UnsafeMutablePointer<Float>, dQKV: UnsafeMutablePointer<Float>, dropout: DropoutMask
    ) {
        let d = hidden / heads, ld = 3 * hidden
        let scale = 1 / Float(d).squareRoot()
        let offsets = table.offsets, lengths = table.lengths, maskOffsets = table.probabilityOffsets
        let box = UnsafeSendableBox((queries, qkv, probabilities, dropped, dContext, dProbabilities, dQueries, dQKV))
        Parallel.forEach(table.count * heads) { pair in
            let (queries, qkv, probabilities, dropped, dContext, dProbabilities, dQueries, dQKV) = box.value
            let b = pair / heads, h = pair % heads, L = lengths[b], mask = maskOffsets[b] + h * L * L
            let K = qkv + offsets[b] * ld + hidden + h * d, V = K + hidden
            let dK = dQKV + offsets[b] * ld + hidden + h * d, dV = dK + hidden
            let P = probabilities + pair * stride, dP = dProbabilities + pair * stride
            let used = dropout.isActive ? dropped + pair * stride : P
            let dC = dContext + b * hidden + h * d, q = queries + b * hidden + h * d
            // context = Σⱼ P′ⱼ·Vⱼ ⇒ dVⱼ = P′ⱼ·dC, dP′ⱼ = ⟨dC, Vⱼ⟩.
            for j in 0..<L {
                let row = dV + j * ld, pj = used[j]
                for k in 0..<d { row[k] = pj * dC[k] }
            }
            BLAS.gemv(trans: false, m: L, n: d, a: V, lda: ld, x: dC, beta: 0, y: dP)
            if dropout.isActive {
                for j in 0..<L { dP[j] *= dropout.factor(mask + j) }
            }
            pando_softmax_backward_rows(dP, P, 1, Int32(L), Int32(L))
            // s = scale·Kq ⇒ dq = scale·Kᵀ·ds, dKⱼ = scale·dsⱼ·q.
            BLAS.gemv(trans: true, m: L, n: d, alpha: scale, a: K, lda: ld, x: dP, beta: 0, y: dQueries + b * hidden + h * d)
            for j in 0..<L {
                let row = dK + j * ld, s = scale * dP[j]
                for k in 0..<d { row[k] = s * q[k] }
            }
        }
    }
}
