import Foundation
import PandoData
import PandoEngine
@testable import PandoTraining
import XCTest

/// The real encoder on a small subset of real data (the demo's TREC questions):
/// the full-protocol runs live in Tests/Benchmarks/accuracy-runs.
final class RealDataTests: XCTestCase {
    func testMiniLMFineTunesOnRealQuestions() throws {
        let model = try TestFiles.defaultModel()
        let file = TestFiles.repository.appendingPathComponent("deploy/demo/questions.train.csv")
        let all = try LabeledDataset.load(file: file, textColumn: "text", labelColumn: "label", task: .classification,
                                          labels: nil, policy: .fail)
        // 160 questions of the four largest classes: 128 to train, 32 to validate.
        let keep = ["DESC", "ENTY", "HUM", "NUM"]
        let labels = try LabelMap(names: keep)
        let rows = all.examples.filter { keep.contains(all.labels.name(at: $0.target.classIndex!)) }.prefix(160)
        let examples = rows.map { Example(text: $0.text, target: .classIndex(labels.index(of: all.labels.name(at: $0.target.classIndex!))!), line: $0.line) }
        let train = LabeledDataset(task: .classification, labels: labels, examples: Array(examples.prefix(128)), report: all.report)
        let validation = LabeledDataset(task: .classification, labels: labels, examples: Array(examples.suffix(32)), report: all.report)

        var options = TrainingOptions()
        options.epochs = 3
        options.learningRate = 2e-4
        options.batchSize = 8
        options.maxLength = 32
        options.earlyStoppingMetric = "accuracy"
        let trainer = try Trainer(baseModel: model, task: .classification, labels: labels, options: options)
        let output = try TestFiles.temporaryDirectory()
        let record = try trainer.run(train: train, validation: validation, output: output)
        let epochs = record.epochs
        XCTAssertEqual(epochs.count, 3)
        print("real-data epochs:", epochs.map { ($0.trainLoss, $0.validation.value("accuracy") ?? 0) })
        XCTAssertLessThan(epochs[2].trainLoss, 0.8 * log(4.0), "training loss falls well below chance level")
        XCTAssertGreaterThan(epochs.map { $0.validation.value("accuracy") ?? 0 }.max()!, 0.5, "well above chance (0.25) on held-out questions (0.875 when written)")
    }
}
