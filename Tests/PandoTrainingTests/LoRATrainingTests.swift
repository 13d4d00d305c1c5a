import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoTraining
import XCTest

/// `pando train --lora-rank`: only adapters and head move, the run is recorded, the output
/// folder is both the merged model (what predict/evaluate load) and a PEFT adapter.
final class LoRATrainingTests: XCTestCase {
    func testLoRATrainingLearnsAndWritesMergedModelAndAdapter() throws {
        let folder = try TestFiles.tinyModel()
        let output = try TestFiles.temporaryDirectory().appendingPathComponent("lora")
        var options = quickOptions(epochs: 4)
        options.learningRate = 5e-3
        options.lora = LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targets: [.query, .value])
        let train = try dataset(synthetic(count: 160, seed: 1)), validation = try dataset(synthetic(count: 60, seed: 2))
        let trainer = try Trainer(baseModel: folder, task: .classification, labels: train.labels, options: options)
        let (original, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
        let record = try trainer.run(train: train, validation: validation, test: try dataset(synthetic(count: 60, seed: 3)), output: output)
        XCTAssertLessThan(record.epochs.last!.trainLoss, record.epochs.first!.trainLoss)
        XCTAssertGreaterThan(record.test!.value("accuracy")!, 0.7, "chance is 0.5")

        for spec in original.layout.tensors where !spec.name.hasPrefix("classifier.") && !spec.name.hasPrefix("bert.pooler.") {
            XCTAssertEqual(trainer.model.parameters.values(spec.name), original.parameters.values(spec.name), "base \(spec.name) moved")
        }
        XCTAssertNotEqual(trainer.model.parameters.values("bert.encoder.layer.0.attention.self.value.lora_B.weight"),
                          [Float](repeating: 0, count: 4 * trainer.model.config.hiddenSize), "B trained")
        XCTAssertEqual(try XCTUnwrap(TrainingRecord.read(from: output)).options.lora, options.lora)

        // The merged folder predicts what the adapter model predicts.
        let sequences = trainer.encode(try dataset(synthetic(count: 20, seed: 9)))
        let expected = BatchedInference(model: trainer.model, batchSize: 8, maxLength: trainer.maxLength).logits(sequences)
        let (merged, report) = try BertModel.load(from: output)
        XCTAssertNil(merged.lora)
        XCTAssertEqual(report.unused, [])
        let got = BatchedInference(model: merged, batchSize: 8, maxLength: trainer.maxLength).logits(sequences)
        for (a, b) in zip(got, expected) { for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-4) } }
        let loaded = try FineTunedModel(folder: output)
        XCTAssertEqual(try loaded.evaluate(try dataset(synthetic(count: 60, seed: 3))).value("accuracy")!, record.test!.value("accuracy")!, accuracy: 0.02)

        // And the PEFT adapter beside it gives the same model on the base.
        let (base, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
        XCTAssertFalse(BertModel.isPEFTAdapter(output), "no adapter_config.json beside the merged model (transformers would load the adapter)")
        let adapter = try BertModel.loadPEFTAdapter(from: output.appendingPathComponent("adapter"), base: base)
        XCTAssertEqual(adapter.parameters.values, trainer.model.parameters.values)
    }

    func testBadLoRASettingsAreRefused() throws {
        var options = quickOptions()
        options.lora = LoRAConfig(rank: 0)
        XCTAssertThrowsError(try options.validate()) { XCTAssertTrue("\($0)".contains("--lora-rank must be at least 1"), "\($0)") }
        options.lora = LoRAConfig(rank: 4)
        options.freezeLayers = 1
        XCTAssertThrowsError(try options.validate()) { XCTAssertTrue("\($0)".contains("--freeze-layers"), "\($0)") }
    }
}
