/// Book-keeping for DP-SGD (Bu et al. 2022): what the norm pass saw of every trained
/// layer, kept so that the clipped sum `Σᵢ cᵢ·gᵢ` (cᵢ = min(1, C/‖gᵢ‖)) is formed from it
/// without a second backward pass.
///
/// A linear layer's clipped weight gradient is `Gᵀ·diag(c)·X`: its output gradient `G`
/// with each row scaled by its example's factor, times its input `X`. The norm pass
/// copies `G` (the workspace reuses its gradient buffers from layer to layer) and notes
/// where `X` lies: activations the forward pass keeps are read in place, the feed-forward
/// activation (shared by all layers) is recomputed from its kept input, and an input the
/// workspace overwrites (a dropped LoRA input) is copied. LayerNorm's γ and β gradients,
/// already summed per example for the norms, are kept per example and weighted. The book
/// skips the second backward's input-gradient GEMMs, attention and LayerNorm backward:
/// about a third of a DP-SGD step.
///
/// Storage grows to the largest batch seen and is then reused: steady-state steps
/// allocate nothing.
final class GradientBook {
    /// Where a linear layer's input lies when its gradient is formed.
    enum Input {
        /// Kept by the workspace until the next forward pass.
        case kept(UnsafePointer<Float>)
        /// `activation(pre)`, recomputed into `into` (a scratch the forward pass also used).
        case activated(pre: UnsafePointer<Float>, activation: BertConfig.Activation, into: UnsafeMutablePointer<Float>)
        /// Copied into the book at `offset`.
        case copied(offset: Int)
    }

    struct Linear {
        let gradient: Int
        let input: Input
        let rows, inputs, outputs: Int
        let weight: Int
        let bias: Int?
    }

    struct Norm {
        /// Per example: `cols` γ gradients, then `cols` β gradients.
        let perExample: Int
        let cols: Int
        let gamma, beta: Int
        let gammaTrained, betaTrained: Bool
    }

    private(set) var linears: [Linear] = []
    private(set) var norms: [Norm] = []
    /// The embedding sum's gradient (tokens × hidden), when an embedding table is trained.
    private(set) var embeddingSum: Int?
    /// The ordinal head's logit gradients (sequences × thresholds).
    private(set) var ordinalLogits: Int?

    private var storage = FloatStorage(count: 0)
    private var used = 0

    /// Forgets the last batch, keeping the storage.
    func reset() {
        linears.removeAll(keepingCapacity: true)
        norms.removeAll(keepingCapacity: true)
        embeddingSum = nil
        ordinalLogits = nil
        used = 0
    }

    func pointer(_ offset: Int) -> UnsafeMutablePointer<Float> { storage.buffer.base + offset }

    /// Reserves `count` floats and returns their offset, growing (and copying) the storage if needed.
    func reserve(_ count: Int) -> Int {
        if used + count > storage.buffer.count {
            let grown = FloatStorage(count: max(used + count, storage.buffer.count + storage.buffer.count / 2))
            grown.buffer.base.update(from: storage.buffer.base, count: used)
            storage = grown
        }
        defer { used += count }
        return used
    }

    /// Copies `rows` rows of `cols` floats at row stride `ld`, compactly, and returns the offset.
    func copy(_ x: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int) -> Int {
        let offset = reserve(rows * cols), out = pointer(offset)
        if ld == cols {
            out.update(from: x, count: rows * cols)
        } else {
            for r in 0..<rows { (out + r * cols).update(from: x + r * ld, count: cols) }
        }
        return offset
    }

    func recordLinear(dY: UnsafePointer<Float>, ld: Int, input: Input, rows: Int, inputs: Int, outputs: Int, weight: Int, bias: Int?) {
        let gradient = copy(dY, rows: rows, cols: outputs, ld: ld)
        linears.append(Linear(gradient: gradient, input: input, rows: rows, inputs: inputs, outputs: outputs, weight: weight, bias: bias))
    }

    func recordNorm(_ norm: Norm) { norms.append(norm) }
    func recordEmbeddingSum(_ dSum: UnsafePointer<Float>, tokens: Int, hidden: Int) {
        embeddingSum = copy(dSum, rows: tokens, cols: hidden, ld: hidden)
    }
    func recordOrdinalLogits(_ dLogits: UnsafePointer<Float>, rows: Int, cols: Int) {
        ordinalLogits = copy(dLogits, rows: rows, cols: cols, ld: cols)
    }
}

extension BertModel {
    /// Adds the clipped sum `Σᵢ factors[i]·gᵢ` to `gradients` from the book the last norm
    /// pass over `batch` kept (see ``GradientBook``).
    func addBookedGradients(_ book: GradientBook, factors: [Float], batch: PackedBatch, workspace ws: BertWorkspace,
                            gradients: ParameterBuffer) {
        let B = batch.count, N = batch.tokenCount, table = ws.table
        // Each packed row's factor: N token rows (a pass over every token), then B sequence rows.
        let rowFactors = book.pointer(book.reserve(N + B))
        for b in 0..<B {
            let start = table.offsets[b]
            for t in start..<(start + table.lengths[b]) { rowFactors[t] = factors[b] }
            rowFactors[N + b] = factors[b]
        }
        func scaleRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
            precondition(rows == N || rows == B, "a booked pass over \(rows) rows is neither the batch's \(N) tokens nor its \(B) sequences")
            let box = UnsafeSendableBox((x, UnsafePointer(rows == N ? rowFactors : rowFactors + N)))
            Parallel.forRanges(rows, minimumChunk: max(1, (1 << 14) / max(cols, 1))) { range in
                let (x, perRow) = box.value
                for r in range {
                    let f = perRow[r], row = x + r * cols
                    for j in 0..<cols { row[j] *= f }
                }
            }
        }

        for entry in book.linears {
            let dY = book.pointer(entry.gradient)
            scaleRows(dY, rows: entry.rows, cols: entry.outputs)
            let x: UnsafePointer<Float>
            switch entry.input {
            case .kept(let p): x = p
            case .activated(let pre, let activation, let into):
                Elementwise.activation(pre, count: entry.rows * entry.inputs, activation: activation, output: into)
                x = UnsafePointer(into)
            case .copied(let offset): x = UnsafePointer(book.pointer(offset))
            }
            addLinearGradients(dOutput: dY, ld: entry.outputs, input: x, rows: entry.rows, inputs: entry.inputs, outputs: entry.outputs,
                               weight: entry.weight, bias: entry.bias, gradients: gradients, workspace: ws)
        }

        let g = gradients.buffer.base
        for norm in book.norms {
            let per = book.pointer(norm.perExample), cols = norm.cols
            for b in 0..<B {
                let f = factors[b], row = per + b * 2 * cols
                if norm.gammaTrained { let dg = g + norm.gamma; for j in 0..<cols { dg[j] += f * row[j] } }
                if norm.betaTrained { let db = g + norm.beta; for j in 0..<cols { db[j] += f * row[cols + j] } }
            }
        }

        if let offset = book.ordinalLogits {
            let d = book.pointer(offset)
            scaleRows(d, rows: B, cols: head.outputs)
            ordinalHeadGradients(dLogits: d, batch: batch, workspace: ws, gradients: gradients)
        }

        if let offset = book.embeddingSum {
            let d = book.pointer(offset)
            scaleRows(d, rows: N, cols: config.hiddenSize)
            scatterEmbeddingGradients(dSum: d, batch: batch, workspace: ws, gradients: gradients)
        }
    }
}
