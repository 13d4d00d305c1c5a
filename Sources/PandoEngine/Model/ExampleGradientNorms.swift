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
///
/// With ``keepsBook`` on, the pass also keeps what forming the clipped sum needs
/// (``GradientBook``), so DP-SGD needs no second backward.
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
    /// Whether the next norm passes keep their book (on by default; off: the clipped sum
    /// takes a second backward, kept for comparison and tests).
    public var keepsBook = true
    /// What the last pass kept, when ``keepsBook`` was on.
    let book = GradientBook()

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
        // Two Gram blocks or one explicit out × in gradient, plus one row of sums.
        let block = min(L, Self.gramBlock)
        perWorker = max(2 * block * block, widest) + 2 * max(3 * c.hiddenSize, c.intermediateSize)
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
        book.reset()
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
    /// parameter offsets of the block (which may be rows of a wider fused tensor). `input`
    /// says where the book finds `x` later (default: `x` stays where it is).
    func linear(dY: UnsafePointer<Float>, ld: Int, x: UnsafePointer<Float>, rows: Int, inputs: Int, outputs: Int,
                weight: Int, bias: Int?, input: GradientBook.Input? = nil) {
        let w = trained(weight, inputs * outputs), bTrained = bias.map { trained($0, outputs) } ?? false
        guard w || bTrained else { return }
        if keepsBook {
            book.recordLinear(dY: dY, ld: ld, input: input ?? .kept(x), rows: rows, inputs: inputs, outputs: outputs,
                              weight: weight, bias: bias)
        }
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
                    total += ghostNorm(x: a, inputs: inputs, g: g, ld: ld, outputs: outputs, rows: L, scratch: s)
                } else {
                    BLAS.serial(transA: true, m: outputs, n: inputs, k: L, a: g, lda: ld, b: a, ldb: inputs, c: s, ldc: inputs)
                    total += squares(s, outputs * inputs)
                }
            }
            out[b] += total
        }
    }

    /// `⟨X·Xᵀ, G·Gᵀ⟩` for one example's `L` rows. Both Gram matrices are symmetric, so only
    /// the blocks on and above the diagonal are formed (those above counted twice): 2/3 of
    /// the multiply-adds at L = 128, and scratch of two blocks whatever L is.
    private func ghostNorm(x: UnsafePointer<Float>, inputs: Int, g: UnsafePointer<Float>, ld: Int, outputs: Int, rows L: Int,
                           scratch s: UnsafeMutablePointer<Float>) -> Double {
        let block = Self.gramBlock
        var total = 0.0
        var i = 0
        while i < L {
            let m = min(block, L - i)
            var j = i
            while j < L {
                let n = min(block, L - j)
                let gx = s, gg = s + m * n
                BLAS.serial(transB: true, m: m, n: n, k: inputs, a: x + i * inputs, lda: inputs, b: x + j * inputs, ldb: inputs, c: gx, ldc: n)
                BLAS.serial(transB: true, m: m, n: n, k: outputs, a: g + i * ld, lda: ld, b: g + j * ld, ldb: ld, c: gg, ldc: n)
                var acc = 0.0
                for e in 0..<(m * n) { acc += Double(gx[e] * gg[e]) }
                total += (j == i ? 1 : 2) * acc
                j += n
            }
            i += m
        }
        return total
    }

    /// Rows per block of the Gram matrices in ``ghostNorm``: the native GEMM's tile is 48
    /// columns wide, so blocks of 48 fill it (blocks of 64 left a third of their second tile
    /// idle; `pando bench train --dp` ran about 5% faster with 48, session 11).
    static let gramBlock = 48

    /// Adds the γ and β gradient norms of a LayerNorm over `rows` rows: per example,
    /// `Σₜ dYₜ ⊙ x̂ₜ` and `Σₜ dYₜ`.
    func layerNorm(dY: UnsafePointer<Float>, normalized: UnsafePointer<Float>, rows: Int, cols: Int, gamma: Int, beta: Int) {
        let tg = trained(gamma, cols), tb = trained(beta, cols)
        guard tg || tb else { return }
        // Kept per example for the book, else summed in the worker's scratch.
        var kept: UnsafeMutablePointer<Float>?
        if keepsBook {
            let offset = book.reserve(count * 2 * cols)
            book.recordNorm(.init(perExample: offset, cols: cols, gamma: gamma, beta: beta, gammaTrained: tg, betaTrained: tb))
            kept = book.pointer(offset)
        }
        let keptBox = UnsafeSendableBox(kept)
        perExample { b, s, out in
            let (start, L) = self.rows(of: b, rows: rows)
            let dg = keptBox.value.map { $0 + b * 2 * cols } ?? s, db = dg + cols
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
        if keepsBook { book.recordEmbeddingSum(dSum, tokens: tokens, hidden: H) }
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
