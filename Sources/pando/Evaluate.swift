import ArgumentParser
import Foundation
import PandoData
import PandoEngine
import PandoTraining

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Score a fine-tuned checkpoint on a labeled file: accuracy, macro-F1, per-class P/R/F1, confusion; RMSE, Pearson, QWK; micro/macro-F1.")

    @Option(help: "Fine-tuned checkpoint folder (from pando train, or a Hugging Face sequence-classification folder).") var model: String
    @Option(help: "Labeled data (.csv, .tsv, .jsonl).") var data: String
    @OptionGroup var columns: DataColumns
    @Option(help: "Multi-label: one threshold for every label (default: the thresholds saved at training, else 0.5).") var threshold: Float?
    @Option(help: "Regression: integer score range for QWK as MIN-MAX (default: saved at training, else inferred).") var scoreRange: String?
    @Option(help: "Sequences per inference batch.") var batchSize = 64
    @Flag(help: "Print the metrics as JSON.") var json = false
    @Flag(help: "Run the int8-quantised encoder (faster; compare its metrics with the float32 ones).") var int8 = false

    func run() throws {
        let checkpoint = try FineTunedModel(folder: URL(fileURLWithPath: model))
        if let threshold { checkpoint.thresholds = [Float](repeating: threshold, count: checkpoint.thresholds.count) }
        if let scoreRange {
            let parts = scoreRange.split(separator: "-").compactMap { Int($0) }
            guard parts.count == 2, parts[0] < parts[1] else { throw ValidationError("--score-range must look like 1-6") }
            checkpoint.scoreRange = parts
        }
        let dataset = try columns.format(task: checkpoint.task).load(URL(fileURLWithPath: data), labels: checkpoint.labelMap)
        reportSkips(dataset)
        if int8 { checkpoint.model.quantizeForInference() }
        let metrics = try checkpoint.evaluate(dataset, batchSize: batchSize)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            print(String(decoding: try encoder.encode(metrics), as: UTF8.self))
        } else {
            print(metrics.table, terminator: "")
        }
    }
}
