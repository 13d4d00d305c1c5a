import Foundation
import PandoData
import PandoEngine
import PandoText

/// Throughput and memory measurements for `pando bench`.
public enum Benchmark {
    /// One benchmark's result, printed for a person or as JSON.
    public struct Report: Codable, Sendable {
        public var kind: String
        public var model: String
        public var batchSize: Int
        public var sequences: Int
        /// Real (non-padding) tokens processed per second.
        public var tokensPerSecond: Double
        /// Tokens per second counting padding to the longest in each batch,
        /// the figure a padded implementation would report.
        public var paddedTokensPerSecond: Double
        public var sequencesPerSecond: Double
        public var gflopsPerSecond: Double
        public var peakRSSMegabytes: Double
        /// Resident memory the model itself added when loaded (before any workspace).
        public var modelResidentMegabytes: Double = 0
        public var seconds: Double
        public var threads: Int
        public var sgemmGFLOPs: Double
        /// Which build of the element-wise kernels ran (`avx512`, `avx2` or `portable`).
        public var elementwiseKernels = Elementwise.kernels
        /// What runs the GEMMs: Pando's kernel for the large products and the OpenBLAS core
        /// for the rest (what OpenBLAS reports), e.g. `Pando avx512-8x48 + OpenBLAS SkylakeX`.
        public var gemmCore: String = {
            let k = GEMMKernels.active
            return k.nativeKernel.map { "Pando \($0) + OpenBLAS \(k.coreName)" } ?? "OpenBLAS \(k.coreName)"
        }()

        public var table: String {
            """
            \(kind): \(model), batch \(batchSize), \(sequences) sequences in \(String(format: "%.2f", seconds)) s, \(threads) threads
              tokens/s (real)     \(String(format: "%10.0f", tokensPerSecond))
              tokens/s (padded)   \(String(format: "%10.0f", paddedTokensPerSecond))
              sequences/s         \(String(format: "%10.1f", sequencesPerSecond))
              GFLOP/s performed   \(String(format: "%10.1f", gflopsPerSecond))   (sgemm on this machine: \(String(format: "%.1f", sgemmGFLOPs)) GFLOP/s, \(gemmCore); element-wise kernels: \(elementwiseKernels))
              peak RSS            \(String(format: "%10.0f", peakRSSMegabytes)) MB   (the model itself: \(String(format: "%.0f", modelResidentMegabytes)) MB resident after loading)
            """
        }
    }

    /// Peak resident set size of this process so far, from /proc (Linux).
    public static func peakRSSMegabytes() -> Double { statusMegabytes("VmHWM:") }

    /// Resident set size of this process now.
    public static func residentMegabytes() -> Double { statusMegabytes("VmRSS:") }

    static func statusMegabytes(_ field: String) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix(field) {
            let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap { Double($0) } ?? 0
            return kb / 1024
        }
        return 0
    }

    /// sgemm GFLOP/s at a shape of BERT's feed-forward layer, best of a few runs.
    public static func sgemmGFLOPs(m: Int = 4096, n: Int = 1536, k: Int = 384) -> Double {
        let a = FloatStorage(count: m * k), b = FloatStorage(count: n * k), c = FloatStorage(count: m * n)
        for i in 0..<a.buffer.count { a.buffer[i] = Float(i % 7) * 0.01 }
        for i in 0..<b.buffer.count { b.buffer[i] = Float(i % 5) * 0.01 }
        var best = 0.0
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            BLAS.gemm(transB: true, m: m, n: n, k: k, a: a.buffer.base, lda: k, b: b.buffer.base, ldb: k, c: c.buffer.base, ldc: n)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = max(best, 2 * Double(m * n * k) / seconds / 1e9)
        }
        return best
    }

    /// Batches of random token ids, all of one length (the fixed-length benchmark).
    public static func fixedBatches(model: BertModel, batchSize: Int, length: Int, count: Int, seed: UInt64 = 7) -> [PackedBatch] {
        (0..<count).map { index in
            let key = CounterRandom.key(seed, UInt64(index))
            let vocab = UInt64(model.config.vocabSize - 1000)
            let sequences = (0..<batchSize).map { s in
                (0..<length).map { t in Int32(1000 + CounterRandom.mix(key &+ UInt64(s * length + t)) % vocab) }
            }
            return PackedBatch(sequences: sequences)
        }
    }

    /// Batches of real text from `files`' `textColumn`, tokenised with the
    /// model's tokenizer and truncated to `maxLength`. Packed, so a batch
    /// costs its real tokens; with `grouped`, sequences of similar length
    /// share batches (as Hugging Face's `group_by_length`), which balances the
    /// work per step. Seeded order.
    public static func textBatches(files: [URL], textColumn: String, tokenizer: BertTokenizer, batchSize: Int,
                                   maxLength: Int, grouped: Bool, seed: UInt64 = 42) throws -> [PackedBatch] {
        var sequences: [[Int32]] = []
        for file in files {
            sequences += try TextInput.read(file: file, textColumn: textColumn).map { tokenizer.encode($0.text, maxLength: maxLength).ids }
        }
        guard !sequences.isEmpty else { throw TrainingError("no texts in \(files.map(\.path).joined(separator: ", "))") }
        var rng = SplitMix64(seed: seed)
        let plan = Trainer.batchPlan(indices: Array(sequences.indices), lengths: sequences.map(\.count), batchSize: batchSize,
                                     groupingBatches: grouped ? 50 : 0, using: &rng)
        return plan.map { PackedBatch(sequences: $0.map { sequences[$0] }) }
    }

    /// Training throughput: `warmup` untimed steps, then `batches` timed ones. With
    /// `privately`, each step is DP-SGD's (per-example clipping at 1, noise σ = 1 from the
    /// cryptographic generator) over the batch as one Poisson sample would give it;
    /// `bookKeeping: false` forms the clipped sum by a second backward (for comparison).
    public static func train(model: BertModel, name: String, batches: [PackedBatch], warmup: Int,
                             frozen: Set<String> = [], privately: Bool = false, bookKeeping: Bool = true, flopFactor: Double = 3) -> Report {
        let capacity = BatchCapacity(
            sequences: batches.map(\.count).max() ?? 1, length: batches.map(\.maxLength).max() ?? 1,
            tokens: batches.map(\.tokenCount).max() ?? 1)
        var settings = FineTuner.Settings()
        settings.learningRate = 1e-5
        let tuner = FineTuner(model: model, capacity: capacity, settings: settings)
        tuner.frozen = frozen
        tuner.bookKeeping = bookKeeping
        let randomness = SecureRandomness()
        func step(_ batch: PackedBatch) {
            if privately {
                tuner.privateStep([(batch, targets(batch))], privacy: DPSGDSettings(maxGradientNorm: 1, noiseMultiplier: 1, expectedBatchSize: Double(batch.count)),
                                  noise: randomness)
            } else {
                tuner.step(batch, targets: targets(batch))
            }
        }
        func targets(_ batch: PackedBatch) -> Targets {
            switch model.head.objective {
            case .softmaxCrossEntropy: .classes((0..<batch.count).map { $0 % model.head.outputs })
            case .sigmoidBinaryCrossEntropy, .ordinal: .multiHot((0..<batch.count * model.head.outputs).map { Float($0 % 2) })
            case .meanSquaredError: .scores((0..<batch.count).map { Float($0 % 3) })
            }
        }
        for i in 0..<warmup { step(batches[i % batches.count]) }
        let start = DispatchTime.now().uptimeNanoseconds
        for batch in batches { step(batch) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return report(kind: privately ? (bookKeeping ? "train-dp" : "train-dp-second-backward") : "train", model: name, batches: batches, seconds: seconds, flopFactor: flopFactor, flops: model,
                      firstTokensOnly: model.head.pooling != .mean)
    }

    /// One configuration of ``trainAlternating(_:name:batches:warmup:rounds:)``.
    public struct TrainingRun {
        public var kind: String
        public var model: BertModel
        public var frozen: Set<String>
        /// Multiples of the forward FLOPs a step performs (3: forward, input and weight gradients).
        public var flopFactor: Double
        public init(kind: String, model: BertModel, frozen: Set<String>, flopFactor: Double = 3) {
            self.kind = kind
            self.model = model
            self.frozen = frozen
            self.flopFactor = flopFactor
        }
    }

    /// Training throughput of several configurations measured step by step in turn: each
    /// batch is timed once per configuration before the next batch, `rounds` times over the
    /// batches, so a change in the machine's load falls on all of them alike.
    public static func trainAlternating(_ runs: [TrainingRun], name: String, batches: [PackedBatch], warmup: Int, rounds: Int) -> [Report] {
        let capacity = BatchCapacity(
            sequences: batches.map(\.count).max() ?? 1, length: batches.map(\.maxLength).max() ?? 1,
            tokens: batches.map(\.tokenCount).max() ?? 1)
        var settings = FineTuner.Settings()
        settings.learningRate = 1e-5
        let tuners = runs.map { run -> FineTuner in
            let tuner = FineTuner(model: run.model, capacity: capacity, settings: settings)
            tuner.frozen = run.frozen
            return tuner
        }
        func targets(_ model: BertModel, _ batch: PackedBatch) -> Targets { .classes((0..<batch.count).map { $0 % model.head.outputs }) }
        for (run, tuner) in zip(runs, tuners) {
            precondition(run.model.head.objective == .softmaxCrossEntropy, "the alternating benchmark trains a softmax head")
            for i in 0..<warmup { tuner.step(batches[i % batches.count], targets: targets(run.model, batches[i % batches.count])) }
        }
        var seconds = [Double](repeating: 0, count: runs.count)
        for _ in 0..<max(1, rounds) {
            for batch in batches {
                for (k, (run, tuner)) in zip(runs, tuners).enumerated() {
                    let start = DispatchTime.now().uptimeNanoseconds
                    tuner.step(batch, targets: targets(run.model, batch))
                    seconds[k] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                }
            }
        }
        let all = Array((0..<max(1, rounds)).map { _ in batches }.joined())
        return zip(runs, seconds).map { run, s in
            report(kind: run.kind, model: name, batches: all, seconds: s, flopFactor: run.flopFactor, flops: run.model,
                   firstTokensOnly: run.model.head.pooling != .mean)
        }
    }

    /// Inference throughput (forward and head, no gradients).
    public static func infer(model: BertModel, name: String, batches: [PackedBatch], warmup: Int) -> Report {
        let capacity = BatchCapacity(
            sequences: batches.map(\.count).max() ?? 1, length: batches.map(\.maxLength).max() ?? 1,
            tokens: batches.map(\.tokenCount).max() ?? 1)
        let ws = BertWorkspace(model: model, capacity: capacity, training: false)
        for i in 0..<warmup { model.forward(batches[i % batches.count], workspace: ws) }
        let start = DispatchTime.now().uptimeNanoseconds
        for batch in batches { model.forward(batch, workspace: ws) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return report(kind: "infer", model: name, batches: batches, seconds: seconds, flopFactor: 1, flops: model,
                      firstTokensOnly: model.head.pooling != .mean)
    }

    static func report(kind: String, model name: String, batches: [PackedBatch], seconds: Double, flopFactor: Double, flops model: BertModel,
                       firstTokensOnly: Bool = false) -> Report {
        let tokens = Double(batches.reduce(0) { $0 + $1.tokenCount })
        let padded = Double(batches.reduce(0) { $0 + $1.count * $1.maxLength })
        let sequences = batches.reduce(0) { $0 + $1.count }
        let flops = batches.reduce(0.0) { $0 + model.forwardFLOPs(lengths: $1.lengths, firstTokensOnly: firstTokensOnly) } * flopFactor
        return Report(
            kind: kind, model: name, batchSize: batches.map(\.count).max() ?? 0, sequences: sequences,
            tokensPerSecond: tokens / seconds, paddedTokensPerSecond: padded / seconds,
            sequencesPerSecond: Double(sequences) / seconds, gflopsPerSecond: flops / seconds / 1e9,
            peakRSSMegabytes: peakRSSMegabytes(), seconds: seconds, threads: Parallel.workers, sgemmGFLOPs: 0)
    }
}
