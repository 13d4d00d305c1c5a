import Foundation

/// Losses over the head's logits, each writing `dLogits` for the backward
/// pass with the same reduction as PyTorch's default (`mean`).
public enum LossKernel {
    /// Cross-entropy over softmax; with class weights the mean is weighted,
    /// `Σ w[yᵢ]·nllᵢ / Σ w[yᵢ]`, as `torch.nn.CrossEntropyLoss(weight:)`. `offsets` are added
    /// to every row's logits inside the loss only (logit adjustment; −∞ leaves a class out of the
    /// softmax, so it gets no gradient): the logits themselves are not changed.
    public static func softmaxCrossEntropy(
        logits: UnsafePointer<Float>, rows: Int, classes: Int, targets: [Int], weights: [Float]?,
        offsets: [Float]? = nil, dLogits: UnsafeMutablePointer<Float>?
    ) -> Float {
        precondition(targets.count == rows, "\(targets.count) targets for \(rows) rows")
        if let offsets { precondition(offsets.count == classes, "\(offsets.count) logit offsets for \(classes) classes") }
        var total: Double = 0, weightSum: Double = 0
        for r in 0..<rows {
            let y = targets[r]
            precondition(y >= 0 && y < classes, "class \(y) outside 0..<\(classes)")
            weightSum += Double(weights?[y] ?? 1)
        }
        let norm = Float(1 / weightSum)
        for r in 0..<rows {
            let row = logits + r * classes
            let y = targets[r]
            let w = weights?[y] ?? 1
            // z = logits + offsets; an offset of −∞ takes the class out of the softmax.
            let z = { (c: Int) -> Float in row[c] + (offsets?[c] ?? 0) }
            precondition(z(y).isFinite, "class \(y) is a target but its logit offset is \(offsets?[y] ?? 0)")
            var m = -Float.infinity
            for c in 0..<classes { m = max(m, z(c)) }
            var s: Float = 0
            for c in 0..<classes { s += expf(z(c) - m) }
            let logSum = m + logf(s)
            total += Double(w * (logSum - z(y)))
            if let dLogits {
                let d = dLogits + r * classes
                for c in 0..<classes { d[c] = w * norm * expf(z(c) - logSum) }
                d[y] -= w * norm
            }
        }
        return Float(total / weightSum)
    }

    /// Binary cross-entropy on sigmoid outputs, mean over all entries, in
    /// the overflow-free form `max(z,0) − z·y + log(1 + e^{−|z|})`. With
    /// `positiveWeights` (one per output column, `count` a multiple of their number)
    /// the positive term of column j is weighted by p_j, as
    /// `torch.nn.BCEWithLogitsLoss(pos_weight:)`:
    /// `p·y·softplus(−z) + (1 − y)·softplus(z)`, still a plain mean over all entries.
    public static func sigmoidBinaryCrossEntropy(
        logits: UnsafePointer<Float>, count: Int, targets: [Float], positiveWeights: [Float]? = nil,
        dLogits: UnsafeMutablePointer<Float>?
    ) -> Float {
        precondition(targets.count == count, "\(targets.count) targets for \(count) outputs")
        var total: Double = 0
        let inv = 1 / Float(count)
        if let w = positiveWeights {
            let columns = w.count
            precondition(columns > 0 && count % columns == 0, "\(columns) positive weights for \(count) outputs")
            for i in 0..<count {
                let z = logits[i], y = targets[i], p = w[i % columns]
                // softplus(−z) = log(1 + e^{−z}) and softplus(z) = softplus(−z) + z, overflow-free.
                let tail = log1pf(expf(-abs(z)))
                let softplusMinus = max(-z, 0) + tail, softplusPlus = max(z, 0) + tail
                total += Double(p * y * softplusMinus + (1 - y) * softplusPlus)
                // d/dz: −p·y·(1 − σ) + (1 − y)·σ = σ·(1 + (p − 1)·y) − p·y.
                dLogits?[i] = ((1 + (p - 1) * y) / (1 + expf(-z)) - p * y) * inv
            }
            return Float(total / Double(count))
        }
        for i in 0..<count {
            let z = logits[i], y = targets[i]
            total += Double(max(z, 0) - z * y + log1pf(expf(-abs(z))))
            dLogits?[i] = (1 / (1 + expf(-z)) - y) * inv
        }
        return Float(total / Double(count))
    }

    /// Mean squared error of one output per row.
    public static func meanSquaredError(
        predictions: UnsafePointer<Float>, count: Int, targets: [Float], dPredictions: UnsafeMutablePointer<Float>?
    ) -> Float {
        precondition(targets.count == count, "\(targets.count) targets for \(count) outputs")
        var total: Double = 0
        for i in 0..<count {
            let e = predictions[i] - targets[i]
            total += Double(e * e)
            dPredictions?[i] = 2 * e / Float(count)
        }
        return Float(total / Double(count))
    }
}
