import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoTraining
import XCTest

/// The ordinal task (`--task ordinal`): CORAL head, level predictions and metrics.
final class OrdinalTests: XCTestCase {
    func testLevelsProbabilitiesAndMetricsFromThresholdLogits() throws {
        // Three levels, two thresholds: a level is the number of positive logits.
        let logits: [[Float]] = [[2, -1], [3, 2], [-1, -2], [1, 0.5]]
        XCTAssertEqual(logits.map(Evaluation.ordinalLevel), [1, 2, 0, 2])
        for z in logits {
            let p = Evaluation.ordinalProbabilities(z)
            XCTAssertEqual(p.count, 3)
            XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-6)
            XCTAssertTrue(p.allSatisfy { $0 >= 0 })
        }
        // P(level 0) = 1 − σ(z₀), P(level 2) = σ(z₁) when the thresholds are ordered.
        let p = Evaluation.ordinalProbabilities([2, -1])
        XCTAssertEqual(p[0], 1 - 1 / (1 + expf(-2)), accuracy: 1e-6)
        XCTAssertEqual(p[2], 1 / (1 + expf(1)), accuracy: 1e-6)

        let truth = [1, 1, 0, 0]
        let m = try Evaluation.metrics(logits: logits, targets: truth.map { .classIndex($0) }, task: .ordinal, labels: ["low", "mid", "high"])
        XCTAssertEqual(m.summary["accuracy"], 0.5)
        XCTAssertEqual(m.summary["mean_absolute_level_error"], 0.75, "|1−1| + |1−2| + |0−0| + |0−2| over 4")
        XCTAssertEqual(m.summary["qwk"], quadraticWeightedKappa(truth, [1, 2, 0, 2], range: 0...2))
        XCTAssertNotNil(m.summary["macro_f1"])
        XCTAssertEqual(EvaluationMetrics.defaultMetric(for: .ordinal), "mean_absolute_level_error")
        XCTAssertTrue(EvaluationMetrics.lowerIsBetter(EvaluationMetrics.defaultMetric(for: .ordinal)))
    }

    func testNumericLevelNamesAreOrderedByValue() throws {
        let dir = try TestFiles.temporaryDirectory()
        let file = dir.appendingPathComponent("levels.csv")
        try "text,label\na,10\nb,2\nc,1\nd,2\n".write(to: file, atomically: true, encoding: .utf8)
        let data = try DataFormat(task: .ordinal).load(file, labels: nil)
        XCTAssertEqual(data.labels.names, ["1", "2", "10"])
        XCTAssertEqual(data.examples.map { $0.target.classIndex! }, [2, 1, 0, 1])
    }

    /// A synthetic ordinal set: the level is how many times `tok7` occurs (0–3) among filler
    /// tokens. The ordinal head learns it; plain classification on the same data is trained
    /// alongside for comparison (printed, and both must beat always predicting one level).
    func testOrdinalTrainingLearnsLevels() throws {
        func rows(_ count: Int, seed: UInt64) -> [(text: String, label: String)] {
            var rng = SplitMix64(seed: seed)
            return (0..<count).map { i in
                let level = i % 4
                var words = (0..<(4 + Int(rng.next() % 4))).map { _ in "tok\(20 + Int(rng.next() % 40))" }
                for _ in 0..<level { words.insert("tok7", at: Int(rng.next() % UInt64(words.count + 1))) }
                return (words.joined(separator: " "), "L\(level)")
            }
        }
        let levels = ["L0", "L1", "L2", "L3"]
        let folder = try TestFiles.tinyModel()
        var results: [TaskKind: [String: Double]] = [:]
        for task in [TaskKind.ordinal, .classification] {
            let output = folder.deletingLastPathComponent().appendingPathComponent("out-\(task.rawValue)")
            let train = try dataset(rows(320, seed: 1), labels: levels)
            let validation = try dataset(rows(80, seed: 2), labels: levels)
            var options = quickOptions(epochs: 12)
            options.learningRate = 3e-3
            let trainer = try Trainer(baseModel: folder, task: task, labels: train.labels,
                                      options: options)
            _ = try trainer.run(train: relabel(train, task), validation: relabel(validation, task), output: output)
            let model = try FineTunedModel(folder: output)
            XCTAssertEqual(model.task, task)
            results[task] = try model.evaluate(relabel(try dataset(rows(120, seed: 3), labels: levels), task)).summary
        }
        let ordinal = results[.ordinal]!, plain = results[.classification]!
        print("synthetic 4-level set, tiny BERT: ordinal accuracy \(ordinal["accuracy"]!), MAE \(ordinal["mean_absolute_level_error"]!), QWK \(ordinal["qwk"]!); "
              + "classification accuracy \(plain["accuracy"]!), macro-F1 \(plain["macro_f1"]!)")
        // Always predicting one level scores accuracy 0.25 and MAE ≥ 1 on this balanced set.
        XCTAssertGreaterThan(ordinal["accuracy"]!, 0.85)
        XCTAssertLessThan(ordinal["mean_absolute_level_error"]!, 0.25)
        XCTAssertGreaterThan(ordinal["qwk"]!, 0.9)
        XCTAssertGreaterThan(plain["accuracy"]!, 0.5)
    }

    /// The examples of `data` under `task` (an ordinal set is a classification set whose
    /// label order is the level order).
    private func relabel(_ data: LabeledDataset, _ task: TaskKind) -> LabeledDataset {
        LabeledDataset(task: task, labels: data.labels, examples: data.examples)
    }
}
