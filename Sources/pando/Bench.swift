import ArgumentParser
import Foundation
import PandoEngine
import PandoTraining

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training and inference throughput, GFLOP/s and peak memory.",
        subcommands: [Train.self, Infer.self])

    struct Common: ParsableArguments {
        @OptionGroup var model: ModelOption
        @Option(help: "Sequence length of the fixed-length input.") var length = 128
        @Option(help: "Timed batches.") var batches = 5
        @Option(help: "Untimed warm-up batches.") var warmup = 1
        @Option(help: "OpenBLAS and kernel threads (default: all cores).") var threads: Int?
        @Flag(help: "Print the report as JSON.") var json = false

        func load() throws -> (BertModel, String) {
            if let threads {
                BLAS.threads = threads
                Parallel.workers = threads
            }
            let folder = try model.resolve()
            let (m, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b", "c"]))
            return (m, folder.lastPathComponent == "default" ? "default (\(folder.resolvingSymlinksInPath().path))" : folder.path)
        }

        func emit(_ report: Benchmark.Report) throws {
            var report = report
            report.sgemmGFLOPs = Benchmark.sgemmGFLOPs()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(report.table)
            }
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fine-tuning steps per second (AdamW, clipping, dropout).")
        @OptionGroup var common: Common
        @Option(help: "Sequences per batch.") var batchSize = 32

        func run() throws {
            let (model, name) = try common.load()
            let batches = Benchmark.fixedBatches(model: model, batchSize: batchSize, length: common.length, count: common.batches)
            try common.emit(Benchmark.train(model: model, name: name, batches: batches, warmup: common.warmup))
        }
    }

    struct Infer: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Inference sequences per second (no gradients).")
        @OptionGroup var common: Common
        @Option(help: "Sequences per batch.") var batchSize = 64

        func run() throws {
            let (model, name) = try common.load()
            let batches = Benchmark.fixedBatches(model: model, batchSize: batchSize, length: common.length, count: common.batches)
            try common.emit(Benchmark.infer(model: model, name: name, batches: batches, warmup: common.warmup))
        }
    }
}
