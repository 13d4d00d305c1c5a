import ArgumentParser
import Foundation
import PandoServices
import PandoEngine
import PandoTraining

@main
struct Pando: AsyncParsableCommand {
    /// OpenBLAS's environment is set first, while the program is still single-threaded.
    static func main() async {
        ServiceConsole.prepareKernels()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "pando",
        abstract: "Federated fine-tuning of BERT-family text classifiers for school districts.",
        subcommands: [DemoCommand.self, TrainCommand.self, EvaluateCommand.self, PredictCommand.self, EmbedCommand.self, QuantizeCommand.self, SimulateCommand.self, CertsCommand.self, Bench.self, VersionsCommand.self, AuditCommand.self, ServeCommand.self])
}

/// Writes a progress line to standard error after flushing standard output, so the two
/// stay in order when both go to one file.
func progressLine(_ line: String) {
    fflush(nil)
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Options naming the pretrained model folder.
struct ModelOption: ParsableArguments {
    @Option(name: .long, help: "Hugging Face BERT folder (config.json, model.safetensors, vocab.txt). Default: $PANDO_MODEL, else ./models/default.")
    var model: String?

    func resolve() throws -> URL {
        try ModelLocator.resolve(model)
    }
}
