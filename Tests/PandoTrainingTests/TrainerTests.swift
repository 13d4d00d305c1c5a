import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoTraining
import XCTest

final class TrainerTests: XCTestCase {
    func train(seed: UInt64 = 42, options: TrainingOptions? = nil, progress: ProgressReporter = .silent,
               canary: String = "") throws -> (Trainer, TrainingRecord, URL) {
        let folder = try TestFiles.tinyModel()
        let output = folder.deletingLastPathComponent().appendingPathComponent("out")
        let train = try dataset(synthetic(count: 160, seed: 1, canary: canary))
        let validation = try dataset(synthetic(count: 60, seed: 2, canary: canary))
        let test = try dataset(synthetic(count: 60, seed: 3, canary: canary))
        let trainer = try Trainer(baseModel: folder, task: .classification, labels: train.labels,
                                  options: options ?? quickOptions(seed: seed), progress: progress)
        let record = try trainer.run(train: train, validation: validation, test: test, output: output)
        return (trainer, record, output)
    }

    func testLossDecreasesAndBeatsChance() throws {
        let (_, record, output) = try train()
        XCTAssertEqual(record.epochs.count, 4)
        XCTAssertLessThan(record.epochs.last!.trainLoss, record.epochs.first!.trainLoss * 0.8)
        let best = record.epochs.first { $0.epoch == record.bestEpoch }!.validation
        XCTAssertGreaterThan(best.value("accuracy")!, 0.8, "chance is 0.5")
        XCTAssertGreaterThan(record.test!.value("accuracy")!, 0.75)
        for name in ["model.safetensors", "config.json", "vocab.txt", "pando-training.json", "metrics.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: output.appendingPathComponent(name).path), name)
        }
        let saved = try XCTUnwrap(TrainingRecord.read(from: output))
        XCTAssertEqual(saved.labels, ["a", "b"])
        XCTAssertEqual(saved.task, .classification)
        XCTAssertEqual(saved.bestEpoch, record.bestEpoch)
        XCTAssertEqual(saved.options.seed, 42)
        let metrics = try JSONSerialization.jsonObject(with: Data(contentsOf: output.appendingPathComponent("metrics.json"))) as! [String: Any]
        XCTAssertNotNil(metrics["test"])
        XCTAssertEqual((metrics["epochs"] as! [Any]).count, 4)
    }

    func testSeedReproducesWeightsBitwise() throws {
        let (a, _, outA) = try train(seed: 7)
        let (b, _, outB) = try train(seed: 7)
        let (c, _, _) = try train(seed: 8)
        XCTAssertEqual(a.model.parameters.buffer.array, b.model.parameters.buffer.array)
        XCTAssertEqual(try Data(contentsOf: outA.appendingPathComponent("model.safetensors")),
                       try Data(contentsOf: outB.appendingPathComponent("model.safetensors")))
        XCTAssertNotEqual(a.model.parameters.buffer.array, c.model.parameters.buffer.array)
    }

    func testBestCheckpointRoundTripsWithSamePredictions() throws {
        let (trainer, record, output) = try train()
        let texts = synthetic(count: 20, seed: 9).map(\.text)
        let sequences = trainer.encode(try dataset(synthetic(count: 20, seed: 9)))
        let expected = BatchedInference(model: trainer.model, batchSize: 8, maxLength: trainer.maxLength).logits(sequences)

        let (plain, _) = try BertModel.load(from: output)
        XCTAssertEqual(plain.head.labels, ["a", "b"])
        XCTAssertEqual(plain.head.objective, .softmaxCrossEntropy)
        XCTAssertEqual(BatchedInference(model: plain, batchSize: 8, maxLength: trainer.maxLength).logits(sequences), expected)

        let loaded = try FineTunedModel(folder: output)
        let predictions = loaded.predict(texts, batchSize: 8)
        for (p, z) in zip(predictions, expected) {
            XCTAssertEqual(p.label, ["a", "b"][Evaluation.argmax(z)])
            XCTAssertEqual(p.probabilities!, Evaluation.softmax(z))
        }
        // The checkpoint is the best epoch's weights, which the trainer restored.
        let metrics = try loaded.evaluate(try dataset(synthetic(count: 60, seed: 3)))
        XCTAssertEqual(metrics.value("accuracy"), record.test!.value("accuracy"))
    }

    func testFreezingKeepsEmbeddingsAndFirstLayers() throws {
        var options = quickOptions(epochs: 1)
        options.freezeEmbeddings = true
        options.freezeLayers = 1
        let folder = try TestFiles.tinyModel()
        let (original, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
        let (trainer, _, _) = try train(options: options)
        XCTAssertFalse(trainer.frozenTensors.isEmpty)
        for spec in trainer.model.layout.tensors {
            let before = original.parameters.view(spec.name).array, after = trainer.model.parameters.view(spec).array
            if spec.name.hasPrefix("bert.embeddings.") || spec.name.hasPrefix("bert.encoder.layer.0.") {
                XCTAssertEqual(before, after, spec.name)
            } else if spec.name.hasPrefix("bert.encoder.layer.1.") {
                XCTAssertNotEqual(before, after, spec.name)
            }
        }
    }

    /// A mean-pooling head never reads the pooler, so training leaves it exactly as loaded
    /// (no weight decay, no DP noise on weights nothing trains); a pooler head trains it.
    func testAnUnusedPoolerIsFrozen() throws {
        let folder = try TestFiles.tinyModel()
        let (original, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
        var options = quickOptions(epochs: 1)
        options.pooling = .mean
        let (trainer, _, _) = try train(options: options)
        XCTAssertEqual(Set(trainer.model.poolerTensorNames), ["bert.pooler.dense.weight", "bert.pooler.dense.bias"])
        XCTAssertTrue(trainer.frozenTensors.isSuperset(of: trainer.model.poolerTensorNames))
        for name in trainer.model.poolerTensorNames {
            XCTAssertEqual(trainer.model.parameters.values(name), original.parameters.values(name), name)
        }
        options.pooling = .pooler
        XCTAssertTrue(try train(options: options).0.frozenTensors.isDisjoint(with: trainer.model.poolerTensorNames))
    }

    func testProgressNeverContainsText() throws {
        let canary = "zebracanaryxq"
        for style in [ProgressReporter.Style.lines, .bar] {
            var captured = ""
            let reporter = ProgressReporter(style: style) { captured += $0 }
            var options = quickOptions(epochs: 2)
            options.classWeights = .auto
            options.oversample = true
            _ = try train(options: options, progress: reporter, canary: canary)
            XCTAssertTrue(captured.contains("epoch 2/2"), captured)
            XCTAssertTrue(captured.contains("tok/s"))
            XCTAssertFalse(captured.lowercased().contains(canary))
        }
    }

    func testBatchPlanCoversEveryIndexOnceGroupedAndSeeded() {
        var rng = SplitMix64(seed: 3)
        let lengths = (0..<250).map { _ in 3 + Int(rng.next() % 100) }
        var r1 = SplitMix64(seed: 11), r2 = SplitMix64(seed: 11), r3 = SplitMix64(seed: 12)
        let plan = Trainer.batchPlan(indices: Array(0..<250), lengths: lengths, batchSize: 10, groupingBatches: 5, using: &r1)
        XCTAssertEqual(plan.flatMap { $0 }.sorted(), Array(0..<250))
        XCTAssertEqual(plan.count, 25)
        XCTAssertEqual(plan, Trainer.batchPlan(indices: Array(0..<250), lengths: lengths, batchSize: 10, groupingBatches: 5, using: &r2))
        XCTAssertNotEqual(plan, Trainer.batchPlan(indices: Array(0..<250), lengths: lengths, batchSize: 10, groupingBatches: 5, using: &r3))
        // Grouping by length: the mean spread within a batch is far below that of random batches (~65).
        let spread = plan.map { b in Double(b.map { lengths[$0] }.max()! - b.map { lengths[$0] }.min()!) }.reduce(0, +) / 25
        XCTAssertLessThan(spread, 30)
    }

    /// Multi-label synthetic data over labels x, y: "x" for class-a words, "y" when tok20…tok29 appears.
    func multiLabelData(_ rows: [(text: String, label: String)], labels: LabelMap) -> LabeledDataset {
        LabeledDataset(task: .multiLabel, labels: labels, examples: rows.map { row in
            var set: [Int] = row.label == "a" ? [0] : []
            if (20...29).contains(where: { row.text.split(separator: " ").contains(Substring("tok\($0)")) }) { set.append(1) }
            return Example(text: row.text, target: .labelSet(set))
        })
    }

    func testMultiLabelPositiveWeightsAndHeadLearningRateAreUsedAndRecorded() throws {
        let folder = try TestFiles.tinyModel()
        let labels = try LabelMap(names: ["x", "y"])
        func multi(_ r: [(text: String, label: String)]) -> LabeledDataset { multiLabelData(r, labels: labels) }
        let train = multi(synthetic(count: 120, seed: 4))
        var options = quickOptions(epochs: 1)
        options.classWeights = .auto
        options.headLearningRate = 1e-2
        options.learningRate = 1e-4
        var log = ""
        let output = folder.deletingLastPathComponent().appendingPathComponent("multi-weighted")
        let trainer = try Trainer(baseModel: folder, task: .multiLabel, labels: labels, options: options,
                                  progress: ProgressReporter(style: .lines) { log += $0 })
        XCTAssertEqual(trainer.classifierTensorNames, ["classifier.weight", "classifier.bias"])
        let before = trainer.model.parameters.copy()
        let record = try trainer.run(train: train, validation: multi(synthetic(count: 40, seed: 5)), output: output)
        XCTAssertEqual(record.classWeights, train.positiveWeights())
        XCTAssertTrue(log.contains("positive weights (negatives / positives per label)"), log)
        XCTAssertTrue(log.contains("classifier learning rate 0.01"), log)
        let saved = try XCTUnwrap(TrainingRecord.read(from: output))
        XCTAssertEqual(saved.classWeights, train.positiveWeights())
        XCTAssertEqual(saved.options.headLearningRate, 1e-2)
        XCTAssertEqual(saved.options.classWeights, .auto)
        // The classifier moved by far more than an encoder matrix at a 100× smaller rate.
        func change(_ name: String) -> Float {
            let a = trainer.model.parameters.values(name), b = before.values(name)
            return zip(a, b).map { abs($0 - $1) }.max()!
        }
        XCTAssertGreaterThan(change("classifier.weight"), 10 * change("bert.encoder.layer.0.attention.self.query.weight"))

        // A record written before the option existed still loads (headLearningRate nil).
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: output.appendingPathComponent(TrainingRecord.fileName))) as! [String: Any]
        var opts = json["options"] as! [String: Any]
        opts.removeValue(forKey: "headLearningRate")
        json["options"] = opts
        let old = try JSONDecoder().decode(TrainingRecord.self, from: JSONSerialization.data(withJSONObject: json))
        XCTAssertNil(old.options.headLearningRate)
    }

    func testBadClassWeightAndHeadRateCombinationsFailClearly() throws {
        let folder = try TestFiles.tinyModel()
        func failure(_ task: TaskKind, _ edit: (inout TrainingOptions) -> Void) -> String {
            var options = quickOptions(epochs: 1)
            edit(&options)
            let labels = try! LabelMap(names: task == .regression ? [] : ["a", "b", "c"])
            do { _ = try Trainer(baseModel: folder, task: task, labels: labels, options: options) } catch { return "\(error)" }
            return ""
        }
        XCTAssertTrue(failure(.regression) { $0.classWeights = .auto }.contains("--class-weights auto is for classification"))
        XCTAssertTrue(failure(.ordinal) { $0.classWeights = .auto }.contains("not ordinal"))
        XCTAssertTrue(failure(.classification) { $0.tuneThresholds = true }.contains("--tune-thresholds is for multi-label"))
        XCTAssertTrue(failure(.multiLabel) { $0.headLearningRate = 0 }.contains("--head-learning-rate must be positive"))
        XCTAssertTrue(failure(.multiLabel) { $0.headLearningRate = .infinity }.contains("--head-learning-rate must be positive"))
        XCTAssertEqual(failure(.multiLabel) { $0.classWeights = .auto; $0.headLearningRate = 1e-3; $0.tuneThresholds = true }, "")
    }

    func testMultiLabelAndRegressionTrainEvaluateAndPredict() throws {
        let folder = try TestFiles.tinyModel()
        let rows = synthetic(count: 120, seed: 4)
        // Multi-label: "x" for class-a words, "y" when tok20…tok29 appears.
        let labels = try LabelMap(names: ["x", "y"])
        func multi(_ r: [(text: String, label: String)]) -> LabeledDataset { multiLabelData(r, labels: labels) }
        var options = quickOptions(epochs: 2)
        options.tuneThresholds = true
        let out1 = folder.deletingLastPathComponent().appendingPathComponent("multi")
        let r1 = try Trainer(baseModel: folder, task: .multiLabel, labels: labels, options: options)
            .run(train: multi(rows), validation: multi(synthetic(count: 40, seed: 5)), output: out1)
        XCTAssertEqual(r1.thresholds?.count, 2)
        XCTAssertNotNil(r1.epochs.last!.validation.value("micro_f1"))
        let m1 = try FineTunedModel(folder: out1)
        XCTAssertEqual(m1.task, .multiLabel)
        XCTAssertEqual(m1.thresholds, r1.thresholds)
        let p1 = m1.predict(["tok1 tok22"])[0]
        XCTAssertNotNil(p1.labels)
        XCTAssertEqual(p1.probabilities?.count, 2)

        // Regression: score = number of class-a words.
        func scores(_ r: [(text: String, label: String)]) -> LabeledDataset {
            LabeledDataset(task: .regression, labels: try! LabelMap(names: []), examples: r.map { row in
                let n = row.text.split(separator: " ").filter { w in (0..<10).contains { w == "tok\($0)" } }.count
                return Example(text: row.text, target: .score(Float(min(n, 4))))
            })
        }
        let out2 = folder.deletingLastPathComponent().appendingPathComponent("regression")
        let r2 = try Trainer(baseModel: folder, task: .regression, labels: try LabelMap(names: []), options: quickOptions(epochs: 2))
            .run(train: scores(rows), validation: scores(synthetic(count: 40, seed: 5)), output: out2)
        XCTAssertEqual(r2.scoreRange, [0, 4])
        XCTAssertEqual(r2.earlyStoppingMetric, "rmse")
        let m2 = try FineTunedModel(folder: out2)
        XCTAssertEqual(m2.task, .regression)
        let e2 = try m2.evaluate(scores(synthetic(count: 40, seed: 6)))
        XCTAssertNotNil(e2.regression?.qwk)
        XCTAssertNotNil(e2.value("rmse"))
        XCTAssertNotNil(m2.predict(["tok1 tok2"])[0].score)
    }

    func testEarlyStoppingOnAChosenMetric() throws {
        var options = quickOptions(epochs: 6)
        options.learningRate = 1e-7  // nothing improves after the first epoch
        options.patience = 1
        options.earlyStoppingMetric = "accuracy"
        let (_, record, _) = try train(options: options)
        XCTAssertTrue(record.stoppedEarly)
        XCTAssertEqual(record.epochs.count, 2)
        XCTAssertEqual(record.bestEpoch, 1)
        XCTAssertEqual(record.earlyStoppingMetric, "accuracy")

        options.earlyStoppingMetric = "rmse"
        XCTAssertThrowsError(try train(options: options)) { XCTAssertTrue("\($0)".contains("not a classification metric")) }
    }
}

final class MultiLabelLearningTests: XCTestCase {
    /// Multi-label training must learn, not just run: two independent labels
    /// on the separable synthetic task reach a high micro-F1 at threshold 0.5.
    func testMultiLabelHeadLearnsIndependentLabels() throws {
        let folder = try TestFiles.tinyModel()
        let labels = try LabelMap(names: ["x", "y", "z"])
        func multi(_ r: [(text: String, label: String)]) -> LabeledDataset {
            LabeledDataset(task: .multiLabel, labels: labels, examples: r.map { row in
                let words = Set(row.text.split(separator: " ").map(String.init))
                var set: [Int] = row.label == "a" ? [0] : []
                if (20...29).contains(where: { words.contains("tok\($0)") }) { set.append(1) }
                if (30...39).contains(where: { words.contains("tok\($0)") }) { set.append(2) }
                return Example(text: row.text, target: .labelSet(set))
            })
        }
        var options = quickOptions(epochs: 8)
        options.earlyStoppingMetric = "micro_f1"
        let out = folder.deletingLastPathComponent().appendingPathComponent("multi-learn")
        let record = try Trainer(baseModel: folder, task: .multiLabel, labels: labels, options: options)
            .run(train: multi(synthetic(count: 240, seed: 7)), validation: multi(synthetic(count: 80, seed: 8)), output: out)
        let f1 = record.epochs.map { $0.validation.value("micro_f1") ?? 0 }
        print("multi-label micro-F1 by epoch:", f1)
        XCTAssertGreaterThan(f1.max()!, 0.85)
    }
}
