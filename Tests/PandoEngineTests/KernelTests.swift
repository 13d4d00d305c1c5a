import CPandoKernels
import Foundation
import PandoData
@testable import PandoEngine
import PandoTestSupport
import XCTest

/// The C element-wise kernels against double-precision references, on widths
/// that exercise the 16-lane tails, in the instance this CPU runs and in the
/// baseline one; and the first-token shortcut of the last layer against the
/// full layer.
final class KernelTests: XCTestCase {
    let widths = [1, 7, 16, 37, 128, 384]

    func values(_ count: Int, seed: UInt64, spread: Double = 4) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float((Double(rng.next() % 1_000_001) / 500_000 - 1) * spread) }
    }

    /// Runs `body` with each instance this CPU supports selected in turn.
    func forEachInstance(_ body: (String) -> Void) {
        defer { _ = pando_vector_select(nil) }
        var ran: [String] = []
        for name in ["portable", "avx2", "avx512"] where pando_vector_select(name) == 1 {
            XCTAssertEqual(String(cString: pando_vector_kernel_name()), name)
            body(name)
            ran.append(name)
        }
        XCTAssertTrue(ran.contains("portable"), "the baseline instance runs everywhere")
        #if arch(x86_64)
        print("vector kernel instances tested: \(ran.joined(separator: ", "))")
        #endif
    }

    func testSoftmaxAndItsBackwardMatchDoublePrecision() {
        forEachInstance { name in
            for cols in widths {
                let rows = 3, ld = cols + 5
                var x = values(rows * ld, seed: UInt64(cols), spread: 12)
                let original = x
                x.withUnsafeMutableBufferPointer { pando_softmax_rows($0.baseAddress!, Int32(rows), Int32(cols), Int32(ld)) }
                var grad = values(rows * ld, seed: UInt64(cols) + 99)
                let gradIn = grad
                grad.withUnsafeMutableBufferPointer { g in
                    x.withUnsafeBufferPointer { pando_softmax_backward_rows(g.baseAddress!, $0.baseAddress!, Int32(rows), Int32(cols), Int32(ld)) }
                }
                for r in 0..<rows {
                    let row = (0..<cols).map { Double(original[r * ld + $0]) }
                    let m = row.max()!
                    let e = row.map { Foundation.exp($0 - m) }
                    let s = e.reduce(0, +)
                    let p = e.map { $0 / s }
                    let dot = (0..<cols).reduce(0.0) { $0 + Double(gradIn[r * ld + $1]) * p[$1] }
                    for c in 0..<cols {
                        XCTAssertEqual(Double(x[r * ld + c]), p[c], accuracy: 2e-7 + 2e-6 * p[c], "\(name) softmax cols \(cols)")
                        let dExpected = p[c] * (Double(gradIn[r * ld + c]) - dot)
                        XCTAssertEqual(Double(grad[r * ld + c]), dExpected, accuracy: 1e-6, "\(name) softmax backward cols \(cols)")
                    }
                    for c in cols..<ld {
                        XCTAssertEqual(x[r * ld + c], original[r * ld + c], "\(name): padding past cols untouched")
                    }
                }
            }
        }
    }

    /// The fused attention kernel against softmax(scale·QKᵀ)·V in double precision, on lengths
    /// and head sizes that exercise its row-block, key and column tails, at strides like the
    /// packed QKV matrix's; columns of `out` outside the head are left untouched.
    func testFusedAttentionMatchesDoublePrecision() {
        forEachInstance { name in
            for (L, d) in [(1, 8), (5, 32), (8, 16), (13, 24), (31, 32), (33, 64), (128, 32), (77, 40)] {
                let ld = 3 * d + 7, ldo = d + 3
                let qkv = values(L * ld, seed: UInt64(L * 100 + d), spread: 2)
                var out = [Float](repeating: 9, count: L * ldo)
                let scale = 1 / Float(d).squareRoot()
                let ok = qkv.withUnsafeBufferPointer { x in
                    out.withUnsafeMutableBufferPointer { o in
                        pando_attention(x.baseAddress!, x.baseAddress! + d, x.baseAddress! + 2 * d, Int32(ld), Int32(L), Int32(d),
                                        scale, o.baseAddress!, Int32(ldo))
                    }
                }
                XCTAssertEqual(ok, 1)
                var worst = 0.0
                for i in 0..<L {
                    let scores = (0..<L).map { j in (0..<d).reduce(0.0) { $0 + Double(qkv[i * ld + $1]) * Double(qkv[j * ld + d + $1]) } * Double(scale) }
                    let m = scores.max()!
                    let e = scores.map { Foundation.exp($0 - m) }
                    let s = e.reduce(0, +)
                    for c in 0..<d {
                        let want = (0..<L).reduce(0.0) { $0 + e[$1] / s * Double(qkv[$1 * ld + 2 * d + c]) }
                        worst = max(worst, abs(Double(out[i * ldo + c]) - want))
                    }
                    for c in d..<ldo { XCTAssertEqual(out[i * ldo + c], 9, "\(name) L \(L) d \(d): column \(c) untouched") }
                }
                XCTAssertLessThan(worst, 2e-6, "\(name) L \(L) d \(d)")
            }
        }
    }

    /// The encoder without dropout (fused attention) gives the hidden states of the unfused
    /// path (two GEMMs around a softmax) that training with dropout uses: tiny model and MiniLM.
    func testFusedAttentionGivesTheUnfusedHiddenStates() throws {
        defer { AttentionKernel.useFusedKernel = true }
        for (name, model, batch) in try firstTokenModels(pooling: .mean) {
            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: false)
            AttentionKernel.useFusedKernel = true
            let fused = model.encode(batch, workspace: ws).array
            AttentionKernel.useFusedKernel = false
            let unfused = model.encode(batch, workspace: ws).array
            XCTAssertLessThan(maxDifference(fused, unfused).diff, 1e-5, "\(name): hidden states")
            // The two paths sum in different orders, so equal bits would mean the switch did nothing.
            XCTAssertNotEqual(fused, unfused, "\(name): the fused and unfused paths both ran")
        }
    }

    /// DP-SGD's Box–Muller against libm in double precision: every instance, the extreme words
    /// (u = 2⁻³² and 1; θ on and beside each quadrant boundary), odd counts and the 16-lane tail,
    /// and nothing written past `count`.
    func testBoxMullerMatchesLibmInDoublePrecision() {
        let edgeA: [UInt32] = [0, 1, 2, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF]
        let edgeB: [UInt32] = [0, 1, 0x1FFF_FFFF, 0x2000_0000, 0x3FFF_FFFF, 0x4000_0000, 0x4000_0001, 0x7FFF_FFFF,
                               0x8000_0000, 0xBFFF_FFFF, 0xC000_0000, 0xDFFF_FFFF, 0xE000_0000, 0xFFFF_FFFF]
        var words: [UInt32] = []
        for a in edgeA { for b in edgeB { words += [a, b] } }
        var rng = SplitMix64(seed: 11)
        while words.count < 1 << 16 { words.append(UInt32(truncatingIfNeeded: rng.next())) }
        func reference(_ i: Int) -> Double {
            let k = i & ~1, u = (Double(words[k]) + 1) * 0x1p-32, v = Double(words[k + 1]) * 0x1p-32
            let r = (-2 * Foundation.log(u)).squareRoot(), t = 2 * Double.pi * v
            return i == k ? r * Foundation.cos(t) : r * Foundation.sin(t)
        }
        forEachInstance { name in
            for count in [1, 2, 15, 16, 17, 33, 98, words.count - 1, words.count] {
                var out = [Float](repeating: .nan, count: count + 3)
                words.withUnsafeBufferPointer { w in out.withUnsafeMutableBufferPointer { pando_box_muller(w.baseAddress!, count, $0.baseAddress!) } }
                var worst = 0.0
                for i in 0..<count {
                    let expected = reference(i)
                    // One float ulp, plus what libm's own rounding of 2π·v costs near a zero of sin or cos.
                    let error = abs(Double(out[i]) - expected), allowed = Double(Float(expected).ulp) + 1e-14
                    worst = max(worst, error / allowed)
                    if error > allowed { XCTFail("\(name), count \(count), element \(i): \(out[i]) against \(expected)"); break }
                }
                XCTAssertLessThanOrEqual(worst, 1, "\(name), count \(count)")
                XCTAssertTrue(out[count...].allSatisfy(\.isNaN), "\(name): nothing written past count \(count)")
            }
            // The extremes: u = 1 gives exactly 0, u = 2⁻³² the largest radius, √(64 ln 2).
            var out = [Float](repeating: .nan, count: 4)
            pando_box_muller([0xFFFF_FFFF, 0x1234_5678, 0, 0], 4, &out)
            XCTAssertEqual(out[0], 0, "\(name)")
            XCTAssertEqual(out[1], 0, "\(name)")
            XCTAssertEqual(Double(out[2]), (64 * Foundation.log(2.0)).squareRoot(), accuracy: 1e-6, "\(name)")
            XCTAssertEqual(out[3], 0, "\(name)")
        }
    }

    func testGELUAndItsDerivativeMatchDoublePrecision() {
        func gelu(_ x: Double) -> Double { 0.5 * x * (1 + Foundation.erf(x / 2.0.squareRoot())) }
        func derivative(_ x: Double) -> Double {
            0.5 * (1 + Foundation.erf(x / 2.0.squareRoot())) + x * Foundation.exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
        }
        forEachInstance { name in
            for cols in widths {
                let rows = 3
                let pre = values(rows * cols, seed: UInt64(cols), spread: 6)
                var out = [Float](repeating: .nan, count: rows * cols)
                out.withUnsafeMutableBufferPointer { pando_gelu(pre, rows * cols, $0.baseAddress!) }
                var grad = [Float](repeating: 1, count: rows * cols)
                grad.withUnsafeMutableBufferPointer { pando_gelu_backward($0.baseAddress!, pre, rows * cols) }
                for i in 0..<(rows * cols) {
                    let v = Double(pre[i])
                    XCTAssertEqual(Double(out[i]), gelu(v), accuracy: 1e-6 * max(1, abs(v)), "\(name) gelu(\(v))")
                    XCTAssertEqual(Double(grad[i]), derivative(v), accuracy: 1e-6 * max(1, abs(v)), "\(name) gelu′(\(v))")
                }
            }
        }
    }

    func testLayerNormForwardAndBackwardMatchDoublePrecision() {
        forEachInstance { name in
            for cols in widths where cols > 1 {
                let rows = 4, eps: Float = 1e-12
                let x = values(rows * cols, seed: UInt64(cols), spread: 3)
                let gamma = values(cols, seed: 5, spread: 1), beta = values(cols, seed: 6, spread: 1)
                let dy = values(rows * cols, seed: 8)
                var y = [Float](repeating: .nan, count: rows * cols), xhat = y
                var rstd = [Float](repeating: .nan, count: rows)
                y.withUnsafeMutableBufferPointer { yp in
                    xhat.withUnsafeMutableBufferPointer { hp in
                        rstd.withUnsafeMutableBufferPointer {
                            pando_layer_norm_rows(x, nil, nil, Int32(rows), Int32(cols), gamma, beta, eps, hp.baseAddress!, $0.baseAddress!, yp.baseAddress!)
                        }
                    }
                }
                var dx = [Float](repeating: .nan, count: rows * cols)
                var dgamma = [Float](repeating: 1, count: cols), dbeta = [Float](repeating: 1, count: cols)
                dx.withUnsafeMutableBufferPointer { d in
                    dgamma.withUnsafeMutableBufferPointer { g in
                        dbeta.withUnsafeMutableBufferPointer {
                            pando_layer_norm_backward_rows(dy, xhat, rstd, gamma, Int32(rows), Int32(cols), d.baseAddress!, g.baseAddress!, $0.baseAddress!)
                        }
                    }
                }
                var expectedDGamma = [Double](repeating: 1, count: cols), expectedDBeta = expectedDGamma
                for r in 0..<rows {
                    let row = (0..<cols).map { Double(x[r * cols + $0]) }
                    let mean = row.reduce(0, +) / Double(cols)
                    let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(cols)
                    let s = 1 / (variance + Double(eps)).squareRoot()
                    XCTAssertEqual(Double(rstd[r]), s, accuracy: 1e-5 * s, "\(name) rstd")
                    let h = row.map { ($0 - mean) * s }
                    let g = (0..<cols).map { Double(dy[r * cols + $0]) * Double(gamma[$0]) }
                    let meanG = g.reduce(0, +) / Double(cols)
                    let meanGH = (0..<cols).reduce(0.0) { $0 + g[$1] * h[$1] } / Double(cols)
                    for c in 0..<cols {
                        XCTAssertEqual(Double(xhat[r * cols + c]), h[c], accuracy: 1e-5, "\(name) x̂ cols \(cols)")
                        XCTAssertEqual(Double(y[r * cols + c]), h[c] * Double(gamma[c]) + Double(beta[c]), accuracy: 1e-5, "\(name) y")
                        XCTAssertEqual(Double(dx[r * cols + c]), s * (g[c] - meanG - h[c] * meanGH), accuracy: 1e-4 * s, "\(name) dx cols \(cols)")
                        expectedDGamma[c] += Double(dy[r * cols + c]) * h[c]
                        expectedDBeta[c] += Double(dy[r * cols + c])
                    }
                }
                for c in 0..<cols {
                    XCTAssertEqual(Double(dgamma[c]), expectedDGamma[c], accuracy: 1e-4, "\(name) dγ accumulates")
                    XCTAssertEqual(Double(dbeta[c]), expectedDBeta[c], accuracy: 1e-4, "\(name) dβ accumulates")
                }
            }
        }
    }

    /// LayerNorm of x + bias + residual summed inside the kernel equals the sum written out
    /// first and normalised after, bit for bit (the same float additions in the same order),
    /// for every width, tails included, and with or without x̂ and rstd.
    func testLayerNormOfTheResidualSumEqualsTheTwoPasses() {
        forEachInstance { name in
            for cols in widths where cols > 1 {
                let rows = 3, eps: Float = 1e-12
                let x = values(rows * cols, seed: UInt64(cols) + 11, spread: 3), residual = values(rows * cols, seed: 12, spread: 2)
                let bias = values(cols, seed: 13, spread: 1)
                let gamma = values(cols, seed: 5, spread: 1), beta = values(cols, seed: 6, spread: 1)
                let sum = (0..<(rows * cols)).map { x[$0] + bias[$0 % cols] + residual[$0] }
                for keep in [true, false] {
                    var y1 = [Float](repeating: .nan, count: rows * cols), y2 = y1, h1 = y1, h2 = y1
                    var s1 = [Float](repeating: .nan, count: rows), s2 = s1
                    func run(_ input: [Float], _ b: [Float]?, _ r: [Float]?, _ y: inout [Float], _ h: inout [Float], _ s: inout [Float]) {
                        y.withUnsafeMutableBufferPointer { yp in
                            h.withUnsafeMutableBufferPointer { hp in
                                s.withUnsafeMutableBufferPointer { sp in
                                    pando_layer_norm_rows(input, b, r, Int32(rows), Int32(cols), gamma, beta, eps,
                                                          keep ? hp.baseAddress : nil, keep ? sp.baseAddress : nil, yp.baseAddress!)
                                }
                            }
                        }
                    }
                    run(sum, nil, nil, &y1, &h1, &s1)
                    run(x, bias, residual, &y2, &h2, &s2)
                    XCTAssertEqual(y2, y1, "\(name) cols \(cols): y")
                    if keep {
                        XCTAssertEqual(h2, h1, "\(name) cols \(cols): x̂")
                        XCTAssertEqual(s2, s1, "\(name) cols \(cols): rstd")
                    }
                }
            }
        }
    }

    /// Models for the first-token checks: the tiny fixture always, MiniLM when installed.
    func firstTokenModels(pooling: Pooling) throws -> [(String, BertModel, PackedBatch)] {
        let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: pooling)
        var models = [("tiny", try BertModel.load(from: TestFixtures.url("tiny/softmax"), head: head, seed: 1).0,
                       TestFixtures.packedBatch(try TestFixtures.json("tiny/inputs.json")))]
        if let folder = try? TestFixtures.defaultModel() {
            models.append(("MiniLM", try BertModel.load(from: folder, head: head, seed: 1).0,
                           TestFixtures.packedBatch(try TestFixtures.json("minilm/inputs.json"))))
        }
        return models
    }

    /// With a pooler or CLS head, inference computes the last layer for each sequence's
    /// first token only; its logits equal those of the full layer, in float32 and int8.
    func testFirstTokenLastLayerGivesTheFullLayersLogits() throws {
        for pooling in [Pooling.pooler, .cls] {
            for (name, model, batch) in try firstTokenModels(pooling: pooling) {
                for int8 in [false, true] {
                    if int8 { model.quantizeForInference() }
                    defer { model.dropQuantization() }
                    let what = "\(name) \(pooling) \(int8 ? "int8" : "float32")"
                    let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: false)
                    let full = model.encode(batch, workspace: ws).array
                    let fullLogits = model.classify(batch, workspace: ws).array
                    let hidden = model.encode(batch, workspace: ws, firstTokensOnly: true).array
                    let logits = model.classify(batch, workspace: ws).array
                    let H = model.config.hiddenSize
                    for start in ws.table.offsets {
                        let rows = (start * H)..<((start + 1) * H)
                        XCTAssertLessThan(maxDifference(Array(hidden[rows]), Array(full[rows])).diff, 1e-5, "\(what): first token's hidden state")
                    }
                    XCTAssertLessThan(maxDifference(logits, fullLogits).diff, 1e-5, "\(what): logits")
                    XCTAssertNotEqual(hidden, full, "\(what): the other rows were not computed")
                    _ = model.forward(batch, workspace: ws)
                    XCTAssertTrue(ws.lastLayerRanFirstTokensOnly, "\(what): forward takes the first-token path")
                }
            }
        }
    }

    /// Training with a pooler or CLS head runs the first-token last layer forward and
    /// backward; every parameter's gradient equals the one through the full layer.
    func testFirstTokenBackwardGivesTheFullLayersGradients() throws {
        let targets = Targets.classes([0, 2, 1, 2])
        for pooling in [Pooling.pooler, .cls] {
            let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"], pooling: pooling)
            let model = try BertModel.load(from: TestFixtures.url("tiny/softmax"), head: head, seed: 1).0
            let batch = TestFixtures.packedBatch(try TestFixtures.json("tiny/inputs.json"))
            let ws = BertWorkspace(model: model, capacity: BatchCapacity(sequences: batch.count, length: batch.maxLength), training: true)
            let shortcut = ParameterBuffer(layout: model.layout)
            let loss = model.lossAndGradients(batch, targets: targets, workspace: ws, gradients: shortcut, dropout: nil)
            XCTAssertTrue(ws.lastLayerRanFirstTokensOnly, "\(pooling): training takes the first-token path")
            let full = ParameterBuffer(layout: model.layout)
            model.encode(batch, workspace: ws, firstTokensOnly: false)
            model.classify(batch, workspace: ws)
            XCTAssertEqual(model.loss(targets, batch: batch, workspace: ws), loss, accuracy: 1e-6, "\(pooling): loss")
            model.backward(batch, workspace: ws, gradients: full, dropout: nil)
            var checked = 0
            for spec in model.layout.tensors {
                let (diff, scale) = maxDifference(shortcut.view(spec).array, full.view(spec).array)
                // The floor covers the key bias, whose exact gradient is zero (softmax is
                // shift-invariant) and whose computed one is rounding noise.
                XCTAssertLessThanOrEqual(diff, 1e-5 * max(scale, 1e-2), "\(pooling): \(spec.name)")
                if scale > 0 { checked += 1 }
            }
            XCTAssertGreaterThan(checked, model.layout.tensors.count / 2, "\(pooling): gradients are not all zero")
        }
    }
}
