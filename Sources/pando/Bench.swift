import ArgumentParser
import Foundation
import PandoEngine
import PandoFederation
import PandoText
import PandoTraining

/// Resident memory the benchmarked model added when loaded (set by `Common.load`).
let modelResident = LockedDouble()

final class LockedDouble: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0.0
    func withLock<T>(_ body: (inout Double) -> T) -> T { lock.withLock { body(&value) } }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training and inference throughput, GFLOP/s and peak memory.",
        subcommands: [Train.self, Infer.self, Aggregate.self, Compress.self, SecAgg.self])

    struct Common: ParsableArguments {
        @OptionGroup var model: ModelOption
        @Option(help: "Sequence length of the fixed-length input; the truncation length with --data.") var length = 128
        @Option(help: "Timed batches (default: 5 fixed-length batches, or one pass over --data).") var batches: Int?
        @Option(name: .customLong("data"), help: "CSV/JSONL/text file(s) of real text to batch by length instead of fixed-length input (repeatable).")
        var data: [String] = []
        @Option(help: "Text column of --data files.") var textColumn = "text"
        @Flag(help: "With --data: do not group batches by length (dynamic padding only).") var noGrouping = false
        @Option(help: "Untimed warm-up batches.") var warmup = 1
        @Option(help: "Threads for GEMMs and kernels (default: all cores).") var threads: Int?
        @Flag(help: "Print the report as JSON.") var json = false

        func load() throws -> (BertModel, String, URL) {
            if let threads { Parallel.workers = max(1, threads) }
            if !json { print(GEMMKernels.active.summary) }
            let folder = try model.resolve()
            let before = Benchmark.residentMegabytes()
            let (m, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
            modelResident.withLock { $0 = Benchmark.residentMegabytes() - before }
            return (m, folder.lastPathComponent == "default" ? "default (\(folder.resolvingSymlinksInPath().path))" : folder.path, folder)
        }

        /// Fixed-length random batches, or the --data files' texts batched by length.
        func inputs(_ model: BertModel, folder: URL, batchSize: Int) throws -> [PackedBatch] {
            guard !data.isEmpty else {
                return Benchmark.fixedBatches(model: model, batchSize: batchSize, length: length, count: batches ?? 5)
            }
            let tokenizer = try BertTokenizer(folder: folder)
            let all = try Benchmark.textBatches(
                files: data.map { URL(fileURLWithPath: $0) }, textColumn: textColumn, tokenizer: tokenizer,
                batchSize: batchSize, maxLength: min(length, model.config.maxPositions), grouped: !noGrouping)
            return Array(all.prefix(batches ?? all.count))
        }

        func emit(_ report: Benchmark.Report) throws {
            var report = report
            report.sgemmGFLOPs = Benchmark.sgemmGFLOPs()
            report.modelResidentMegabytes = modelResident.withLock { $0 }
            if json {
                try printJSON(report)
            } else {
                print(report.table)
            }
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fine-tuning steps per second (AdamW, clipping, dropout).")
        @OptionGroup var common: Common
        @Option(help: "Sequences per batch.") var batchSize = 32
        @Flag(help: "DP-SGD steps: per-example clipping and Gaussian noise (σ = 1, C = 1).") var dp = false
        @Flag(help: "With --dp: form the clipped sum by a second backward instead of from the norm pass's book-keeping (the same sum; for comparison).") var dpSecondBackward = false
        @Flag(help: "Do not train the embedding tables (as federated rounds do).") var freezeEmbeddings = false
        @Option(help: "Train LoRA adapters of this rank (base weights frozen); the same run also times full fine-tuning on the same batches, the two alternating step by step, and prints the speed-up.") var loraRank: Int?
        @Option(help: "With --lora-rank: layers with adapters (query, key, value, attention-output, intermediate, output).") var loraTargets = "query,value"
        @Option(help: "With --lora-rank: dropout on the adapters' input (as pando train's default).") var loraDropout: Float = 0.1
        @Option(help: "With --lora-rank: passes over the batches; each batch is timed with full fine-tuning, then with LoRA.") var rounds = 2

        func run() throws {
            let (model, name, folder) = try common.load()
            let batches = try common.inputs(model, folder: folder, batchSize: batchSize)
            let frozen = freezeEmbeddings ? Set(model.layout.tensors.map(\.name).filter { $0.hasPrefix(model.config.family.embeddingsPrefix) }) : []
            guard !dpSecondBackward || dp else { throw ValidationError("--dp-second-backward needs --dp") }
            guard let loraRank else {
                try common.emit(Benchmark.train(model: model, name: name, batches: batches, warmup: common.warmup, frozen: frozen, privately: dp,
                                                bookKeeping: !dpSecondBackward))
                return
            }
            guard !dp else { throw ValidationError("--lora-rank times plain steps; DP-SGD with adapters is measured by pando train --dp-epsilon --lora-rank") }
            let lora = LoRAConfig(rank: loraRank, dropout: loraDropout, targets: try LoRATarget.parseList(loraTargets))
            try lora.validate()
            let adapted = try BertModel(lora: lora, base: model)
            let kind = "train-lora-r\(loraRank)-" + lora.targets.map(\.rawValue).joined(separator: "+")
            // LoRA performs about 2 forward passes' FLOPs a step: no weight gradients of the base.
            let reports = Benchmark.trainAlternating(
                [.init(kind: "train", model: model, frozen: frozen),
                 .init(kind: kind, model: adapted, frozen: adapted.loraFrozenTensors.union(frozen), flopFactor: 2)],
                name: name, batches: batches, warmup: common.warmup, rounds: rounds)
            let speedup = reports[1].tokensPerSecond / reports[0].tokensPerSecond
            for r in reports { try common.emit(r) }
            let trained = adapted.layout.tensors.filter { !adapted.loraFrozenTensors.contains($0.name) }.reduce(0) { $0 + $1.count }
            if common.json {
                print("{\"fullTokensPerSecond\": \(reports[0].tokensPerSecond), \"loraTokensPerSecond\": \(reports[1].tokensPerSecond), \"speedup\": \(speedup), \"trainedParameters\": \(trained)}")
            } else {
                print(String(format: "LoRA r=%d α=%g dropout %g on %@ (%d trained parameters of %d): %.0f tokens/s against full fine-tuning's %.0f, steps alternating over %d rounds: %.2fx",
                             loraRank, lora.alpha, lora.dropout, lora.targets.map(\.rawValue).joined(separator: ","), trained, adapted.parameterCount,
                             reports[1].tokensPerSecond, reports[0].tokensPerSecond, max(1, rounds), speedup))
            }
        }
    }

    struct Infer: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Inference sequences per second (no gradients).")
        @OptionGroup var common: Common
        @Option(help: "Sequences per batch.") var batchSize = 64
        @Flag(help: "Run the int8-quantised encoder (per-output weight scales, per-token activation scales).") var int8 = false
        @Flag(help: "Run attention as two GEMMs around a softmax (the path training with dropout takes) instead of the fused kernel, to measure what fusing gains.")
        var unfusedAttention = false

        func run() throws {
            let (model, name, folder) = try common.load()
            AttentionKernel.useFusedKernel = !unfusedAttention
            let batches = try common.inputs(model, folder: folder, batchSize: batchSize)
            if int8 || model.inferenceOnly {
                model.quantizeForInference()
                if !common.json {
                    print("int8 encoder (kernel: \(Int8Linear.kernel))" + (model.inferenceOnly ? ", loaded from an int8 checkpoint" : ", quantized from the float32 weights at start"))
                }
            }
            var report = Benchmark.infer(model: model, name: name, batches: batches, warmup: common.warmup)
            if int8 || model.inferenceOnly { report.kind = model.inferenceOnly ? "infer-int8-checkpoint" : "infer-int8" }
            if unfusedAttention { report.kind += "-unfused-attention" }
            try common.emit(report)
        }
    }

    struct Compress: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Encode and decode time and size of each update compression on a model-sized delta.")
        @OptionGroup var model: ModelOption
        @Option(help: "Fraction of the trained values top-k sends.") var topkDensity = 0.01
        @Option(help: "Threads (default: all cores).") var threads: Int?

        func run() throws {
            if let threads { Parallel.workers = max(1, threads) }
            let (model, _) = try BertModel.load(from: try model.resolve(), head: .encoderOnly)
            let rows = try CompressionBenchmark.run(layout: model.layout, topKDensity: topkDensity)
            let trained = TensorSelection(layout: model.layout, frozen: TensorSelection.embeddingTables).trainedCount
            print("compress: the \(trained) trained values of a \(model.parameterCount)-parameter model (embedding tables frozen), \(Parallel.workers) threads, best of 3")
            for r in rows {
                print("  " + r.compression.padding(toLength: 20, withPad: " ", startingAt: 0)
                      + String(format: "%9.2f MB (%5.2f%% of Float32)   encode %7.1f ms   decode %7.1f ms",
                               Double(r.bytes) / 1e6, 100 * r.fractionOfFloat32, 1e3 * r.encodeSeconds, 1e3 * r.decodeSeconds))
            }
        }
    }

    struct SecAgg: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "secagg",
            abstract: "The secure-aggregation protocol's compute and bytes in one process, against plain FedAvg's sum.")
        @OptionGroup var model: ModelOption
        @Option(help: "Schools in the round.") var schools = 10
        @Option(help: "Schools that vanish (at the share, masked-input and unmasking stages in turn).") var dropouts = 3
        @Option(help: "SecAgg+ neighbours per school (default: all).") var neighbours: Int?
        @Option(help: "Values per school (default: the model's trained tensors, embedding tables frozen).") var values: Int?
        @Option(help: "Threads (default: all cores).") var threads: Int?
        @Flag(help: "Print the report as JSON.") var json = false

        func run() throws {
            if let threads { Parallel.workers = max(1, threads) }
            let count: Int
            if let values { count = values } else {
                let (model, _) = try BertModel.load(from: try model.resolve(), head: .encoderOnly)
                count = TensorSelection(layout: model.layout, frozen: TensorSelection.embeddingTables).trainedCount
            }
            guard schools >= 3, dropouts >= 0, dropouts < schools else { throw ValidationError("need at least 3 schools and fewer dropouts than schools") }
            let report = try SecureAggregationBenchmark.run(schools: schools, dropouts: dropouts, values: count, neighbours: neighbours)
            if json {
                try printJSON(report)
            } else {
                print(report.table)
            }
        }
    }

    struct Aggregate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Streaming FedAvg throughput and memory against a plain copy of the same bytes.")
        @OptionGroup var model: ModelOption
        @Option(help: "Deltas to aggregate.") var schools = 50
        @Option(help: "Threads (default: all cores).") var threads: Int?
        @Flag(help: "Print the report as JSON.") var json = false

        func run() throws {
            if let threads { Parallel.workers = max(1, threads) }
            let (model, _) = try BertModel.load(from: try model.resolve(), head: .encoderOnly)
            let report = AggregationBenchmark.run(layout: model.layout, schools: schools)
            if json {
                try printJSON(report)
            } else {
                print(report.table)
            }
        }
    }
}

/// Prints `value` as pretty, key-sorted JSON (the benchmarks' `--json`).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
