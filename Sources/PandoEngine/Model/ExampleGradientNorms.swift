import Dispatch

/// Squared L2 norm of each example's gradient over the trained tensors, gathered by
/// ``BertModel/exampleGradientNorms(_:workspace:into:dropout:)`` for DP-SGD's
/// per-example clipping, without forming any per-example gradient.
///
/// For a linear layer `y = x·Wᵀ + b` an example's weight gradient is `Gᵀ·X` over its rows
/// (`X`: L × in, `G`: L × out), and `‖Gᵀ·X‖²_F = ⟨X·Xᵀ, G·Gᵀ⟩`: two L × L Gram matrices
/// ("ghost" norm, Li et al. 2021), L²·(in + out) multiply-adds instead of L·in·out. Each
/// example takes the cheaper of the two (Bu et al. 2022), so long sequences form the
/// explicit product instead. Biases, LayerNorm and embedding rows are summed per example
/// directly; they are small.
public final class ExampleGradientNorms: @unchecked Sendable {
    /// `squared[b]`: the squared gradient norm of sequence `b` of the last batch.
    public var squared: [Double] { Array(values[0..<count]) }
    /// Gradient norms of the last batch, one per sequence.
    public var norms: [Double] { squared.map { $0.squareRoot() } }

    /// The tensors left out, and where they lie in the layout.
    let frozen: Set<String>
    let frozenRanges: [Range<Int>]
    private var values: [Double]
    private var count = 0
    private var starts: [Int] = [], lengths: [Int] = []
    private var tokens = 0
    private let workers: Int
    private let perWorker: Int
    private let scratch: FloatStorage
    /// Where LayerNorm's γ and β gradients go in norm mode (they are summed per example instead).
    let discard: FloatStorage

    /// - Parameters:
    ///   - frozen: tensors that are not trained; they add nothing to the norms.
    ///   - capacity: the workspace's capacity (the longest sequence sizes the Gram scratch).
    public init(model: BertModel, frozen: Set<String>, capacity: BatchCapacity) {
        self.frozen = frozen
        // Merged, so a fused block of frozen tensors (Q, K, V under LoRA) counts as frozen.
        frozenRanges = ParameterLayout.mergedRanges(model.layout.tensors.filter { frozen.contains($0.name) })
        let c = model.config, L = capacity.length
        let widest = max(c.hiddenSize * max(3 * c.hiddenSize, c.intermediateSize), c.hiddenSize * model.head.outputs)
        workers = max(1, Parallel.workers)
        // Two L × L Gram matrices or one explicit out × in gradient, plus one row of sums.
        perWorker = max(2 * L * L, widest) + 2 * max(3 * c.hiddenSize, c.intermediateSize)
        scratch = FloatStorage(count: workers * perWorker)
        discard = FloatStorage(count: 2 * c.hiddenSize)
        values = [Double](repeating: 0, count: capacity.sequences)
    }

    /// Starts a batch: norms back to zero, rows grouped by the batch's sequences.
    func reset(_ batch: PackedBatch, table: SequenceTable) {
        precondition(batch.count <= values.count, "batch of \(batch.count) sequences exceeds the norms' capacity \(values.count)")
        count = batch.count
        tokens = batch.tokenCount
        for b in 0..<count { values[b] = 0 }
        starts = Array(table.offsets.prefix(count))
        lengths = Array(table.lengths.prefix(count))
    }

    /// Adds `value` to example `b`'s squared norm (heads that sum their own).
    func add(_ value: Double, to b: Int) { values[b] += value }

    /// Whether any element of `offset..<offset+count` is trained.
    func trained(_ offset: Int, _ n: Int) -> Bool {
        !frozenRanges.contains { $0.contains(offset) && $0.contains(offset + n - 1) }
    }

    /// The rows of example `b`: its tokens when a pass covers every token, else row `b`
    /// (the head and the last layer's first-token pass run one row per sequence). Equal
    /// counts mean every sequence has one token, and both readings agree.
    @inline(__always)
    private func rows(of b: Int, rows: Int) -> (start: Int, length: Int) {
        if rows == tokens { return (starts[b], lengths[b]) }
        precondition(rows == count, "a pass over \(rows) rows is neither the batch's \(tokens) tokens nor its \(count) sequences")
        return (b, 1)
    }

    /// Runs `body(b, scratch)` for every example, one worker scratch region each.
    private func perExample(_ body: (Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Double>) -> Void) {
        let n = count, w = min(workers, n)
        guard n > 0 else { return }
        let perWorker = perWorker, base = scratch.buffer.base
        values.withUnsafeMutableBufferPointer { out in
            withoutActuallyEscaping(body) { body in
                let box = UnsafeSendableBox((out.baseAddress!, base, body))
                DispatchQueue.concurrentPerform(iterations: w) { k in
                    let (out, scratch, body) = box.value
                    var b = k
                    while b < n { body(b, scratch + k * perWorker, out); b += w }
                }
            }
        }
    }

    /// Adds the weight and bias gradient norms of `y = x·Wᵀ + b` over `rows` rows, from
    /// `dY` (row stride `ld`) and `x` (row stride `inputs`). `weight` and `bias` are
    /// parameter offsets of the block (which may be rows of a wider fused tensor).
    func linear(dY: UnsafePointer<Float>, ld: Int, x: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
                weight: Int, bias: Int?) {
        let w = trained(weight, inputs * outputs), bTrained = bias.map { trained($0, outputs) } ?? false
        guard w || bTrained else { return }
        let ghost = { (L: Int) in L * (inputs + outputs) <= inputs * outputs }
        perExample { b, s, out in
            let (start, L) = self.rows(of: b, rows: rows)
            let g = dY + start * ld, a = x + start * inputs
            var total = 0.0
            if bTrained {
                let sum = s + perWorker - outputs
                sum.update(repeating: 0, count: outputs)
                for t in 0..<L { let row = g + t * ld; for j in 0..<outputs { sum[j] += row[j] } }
                total += squares(sum, outputs)
            }
            if w {
                if L == 1 {
                    total += squares(g, outputs) * squares(a, inputs)
                } else if ghost(L) {
                    let gx = s, gg = s + L * L
                    BLAS.serial(transB: true, m: L, n: L, k: inputs, a: a, lda: inputs, b: a, ldb: inputs, c: gx, ldc: L)
                    BLAS.serial(transB: true, m: L, n: L, k: outputs, a: g, lda: ld, b: g, ldb: ld, c: gg, ldc: L)
                    var acc = 0.0
                    for i in 0..<(L * L) { acc += Double(gx[i] * gg[i]) }
                    total += acc
                } else {
                    BLAS.serial(transA: true, m: outputs, n: inputs, k: L, a: g, lda: ld, b: a, ldb: inputs, c: s, ldc: inputs)
                    total += squares(s, outputs * inputs)
                }
            }
            out[b] += total
        }
    }

    /// Adds the γ and β gradient norms of a LayerNorm over `rows` rows: per example,
    /// `Σₜ dYₜ ⊙ x̂ₜ` and `Σₜ dYₜ`.
    func layerNorm(dY: UnsafePointer<Float>, normalized: UnsafePointer<Float>, rows: Int, cols: Int, gamma: Int, beta: Int) {
        let tg = trained(gamma, cols), tb = trained(beta, cols)
        guard tg || tb else { return }
        perExample { b, s, out in
            let (start, L) = self.rows(of: b, rows: rows)
            let dg = s, db = s + cols
            dg.update(repeating: 0, count: 2 * cols)
            for t in (start)..<(start + L) {
                let d = dY + t * cols, x = normalized + t * cols
                for j in 0..<cols { dg[j] += d[j] * x[j]; db[j] += d[j] }
            }
            out[b] += (tg ? squares(dg, cols) : 0) + (tb ? squares(db, cols) : 0)
        }
    }

    /// Adds the norms of the three embedding tables' rows from the gradient of their sum
    /// (`dSum`, tokens × hidden). Positions are distinct within a sequence, so its position
    /// rows add `Σₜ ‖dₜ‖²`; word and type rows add `Σ ⟨dₜ, dₛ⟩` over pairs with the same id.
    func embeddings(dSum: UnsafePointer<Float>, batch: PackedBatch, hidden H: Int, word: Int, position: Int, tokenType: Int,
                    vocabulary: Int, positions: Int, types: Int) {
        let tw = trained(word, vocabulary * H), tp = trained(position, positions * H), tt = types > 0 && trained(tokenType, types * H)
        guard tw || tp || tt else { return }
        batch.tokenIDs.withUnsafeBufferPointer { ids in
            batch.typeIDs.withUnsafeBufferPointer { typeIDs in
                let box = UnsafeSendableBox((ids, typeIDs))
                perExample { b, _, out in
                    let (ids, typeIDs) = box.value
                    let start = self.starts[b], L = self.lengths[b]
                    var total = 0.0
                    for t in start..<(start + L) {
                        let dt = dSum + t * H
                        let own = squares(dt, H)
                        if tp { total += own }
                        if tw { total += own }
                        if tt { total += own }
                        for u in (t + 1)..<(start + L) where (tw && ids[u] == ids[t]) || (tt && typeIDs[u] == typeIDs[t]) {
                            let cross = 2 * dot(dt, dSum + u * H, H)
                            if tw && ids[u] == ids[t] { total += cross }
                            if tt && typeIDs[u] == typeIDs[t] { total += cross }
                        }
                    }
                    out[b] += total
                }
            }
        }
    }
}

@inline(__always)
private func squares(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc: Float = 0, total = 0.0
    var i = 0
    while i < n {
        let end = min(n, i + 4096)
        acc = 0
        while i < end { acc += x[i] * x[i]; i += 1 }
        total += Double(acc)
    }
    return total
}

@inline(__always)
private func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc: Float = 0
    for i in 0..<n { acc += x[i] * y[i] }
    return Double(acc)
}
