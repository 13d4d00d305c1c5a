extension BertModel {
    /// Backward of the ordinal head: logit k = w·x + b_k, so the text's score gradient is the
    /// sum of its thresholds' logit gradients; adds `dw = Σ_b s_b·x_b` and `db_k = Σ_b dLogits_bk`,
    /// and writes `dx_b = s_b·w` into the pooled gradient. In norm mode (DP-SGD) it adds each
    /// text's ‖s_b·x_b‖² + ‖dLogits_b‖² to its norm instead of touching the gradients.
    func ordinalHeadBackward(_ batch: PackedBatch, workspace ws: BertWorkspace, gradients: ParameterBuffer) {
        let H = config.hiddenSize, B = batch.count, C = head.outputs
        let w = p(offsets.classifierWeight), x = ws.pooledDropped.base, dx = ws.dPooled.base
        let norms = ws.exampleNorms
        let weightTrained = norms?.trained(offsets.classifierWeight, H) ?? true, biasTrained = norms?.trained(offsets.classifierBias, C) ?? true
        if let norms, norms.keepsBook, weightTrained || biasTrained { norms.book.recordOrdinalLogits(ws.dLogits.base, rows: B, cols: C) }
        if norms == nil { ordinalHeadGradients(dLogits: ws.dLogits.base, batch: batch, workspace: ws, gradients: gradients) }
        for b in 0..<B {
            var s: Float = 0, biasSquares: Float = 0
            for k in 0..<C {
                let d = ws.dLogits[b * C + k]
                s += d
                biasSquares += d * d
            }
            if let norms {
                var xSquares: Float = 0
                for j in 0..<H { xSquares += x[b * H + j] * x[b * H + j] }
                norms.add(Double((weightTrained ? s * s * xSquares : 0) + (biasTrained ? biasSquares : 0)), to: b)
            }
            for j in 0..<H { dx[b * H + j] = s * w[j] }
        }
    }

    /// The ordinal head's parameter gradients from logit gradients `dLogits` (B × thresholds):
    /// `dw += Σ_b s_b·x_b` with `s_b = Σ_k dLogits_bk`, `db_k += Σ_b dLogits_bk`.
    func ordinalHeadGradients(dLogits: UnsafePointer<Float>, batch: PackedBatch, workspace ws: BertWorkspace, gradients: ParameterBuffer) {
        let H = config.hiddenSize, C = head.outputs
        let dw = gradients.buffer.base + offsets.classifierWeight, db = gradients.buffer.base + offsets.classifierBias
        let x = ws.pooledDropped.base
        for b in 0..<batch.count {
            var s: Float = 0
            for k in 0..<C { s += dLogits[b * C + k]; db[k] += dLogits[b * C + k] }
            for j in 0..<H { dw[j] += s * x[b * H + j] }
        }
    }
}
