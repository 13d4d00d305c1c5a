import ArgumentParser
import Foundation
import PandoEngine
import PandoText
import PandoTraining

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write an int8 copy of a fine-tuned checkpoint for small machines: about a quarter of the weights' memory.",
        discussion: """
        The encoder's linear layers and the word embeddings are stored as int8 with one scale \
        per output row (symmetric); LayerNorms, position and type embeddings, the pooler and the \
        head stay float32. The output folder holds config.json, model-int8.safetensors (no \
        float weights, so transformers does not load it; keep the float32 folder for that), \
        the tokenizer files and pando-training.json. pando predict, evaluate and embed load it \
        like any checkpoint and run the int8 kernels; training and --explain need the float32 model.
        """)

    @Option(help: "Fine-tuned (or pretrained) float32 checkpoint folder.") var model: String
    @Option(help: "Folder to write the int8 checkpoint to (created; must not be the --model folder).") var output: String

    func run() throws {
        let source = URL(fileURLWithPath: model), destination = URL(fileURLWithPath: output)
        guard source.standardizedFileURL.resolvingSymlinksInPath() != destination.standardizedFileURL.resolvingSymlinksInPath() else {
            throw ValidationError("--output must be another folder than --model")
        }
        guard !Int8Checkpoint.isInt8(source) else { throw ValidationError("\(model) is already an int8 checkpoint") }
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: destination.path), !existing.isEmpty {
            throw ValidationError("--output \(output) already exists and is not empty: give a new folder")
        }
        let checkpoint: FineTunedModel
        do { checkpoint = try FineTunedModel(folder: source) } catch {
            throw ValidationError("\(error)\n(pando quantize takes a fine-tuned checkpoint, from pando train or pando versions export)")
        }
        let companions = (BertTokenizer.folderFiles + ["pando-training.json"])
            .map { source.appendingPathComponent($0) }.filter { FileManager.default.fileExists(atPath: $0.path) }
        try checkpoint.model.saveInt8(to: destination, copying: companions)
        let before = try Self.size(source.appendingPathComponent("model.safetensors"))
        let after = try Self.size(destination.appendingPathComponent(Int8Checkpoint.weightsFile))
        print(String(format: "wrote %@: %@ (%.1f MB, %.0f%% of the float32 %.1f MB)", destination.path, Int8Checkpoint.weightsFile,
                     Double(after) / 1e6, 100 * Double(after) / Double(before), Double(before) / 1e6))
    }

    static func size(_ url: URL) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
    }
}
