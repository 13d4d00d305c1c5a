import ArgumentParser
import Foundation
import PandoEngine
import PandoTraining

@main
struct Pando: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pando",
        abstract: "Federated fine-tuning of BERT-family text classifiers for school districts.",
        subcommands: [DemoCommand.self, TrainCommand.self, EvaluateCommand.self, PredictCommand.self, EmbedCommand.self, SimulateCommand.self, CertsCommand.self, Bench.self, VersionsCommand.self, AuditCommand.self])

    static func main() async {
        // Progress goes to standard error and results to standard output; keep them in order
        // when both are piped to one file.
        nonisolated(unsafe) let out = stdout
        setvbuf(out, nil, _IOLBF, 0)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Options naming the pretrained model folder.
struct ModelOption: ParsableArguments {
    @Option(name: .long, help: "Hugging Face BERT folder (config.json, model.safetensors, vocab.txt). Default: $PANDO_MODEL, else ./models/default.")
    var model: String?

    func resolve() throws -> URL {
        try ModelLocator.resolve(model)
    }
}
