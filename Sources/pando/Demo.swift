import ArgumentParser
import Foundation

/// `pando demo`: the README's main job on the embedded data.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Three schools fine-tune one shared model in federated rounds on the embedded demo data.",
        discussion: """
        Divides deploy/demo/questions.train.csv (TREC question types, see deploy/demo/README.md) \
        among three schools with a Dirichlet(1.0) label skew; each round every school fine-tunes \
        the global all-MiniLM-L6-v2 locally, the coordinator validates and averages the deltas \
        (FedAvg, weighted by examples), and the new global version is scored on \
        deploy/demo/questions.test.csv. Run from the repository root after deploy/bootstrap.

        The coordinator records everything in --state (default demo-state/): each global version \
        as a model folder named by the SHA-256 of its weights, state.sqlite, and the signed, \
        hash-chained audit log (audit.jsonl, public key keys/coordinator.key.pub); each school \
        keeps its own log of the updates it sent (schools/<school>.jsonl). No text of the data is \
        ever recorded. At the end the demo verifies the whole trail (signatures, hash chain, the \
        school logs against the coordinator's log, version files against their ids) and prints \
        the `pando audit verify` command that repeats the check. Running the demo again continues \
        the federation in demo-state/; delete the folder to start over.

        The coordinator and the three school clients are the production services, talking mutual \
        TLS over 127.0.0.1 with certificates from a temporary district CA (`pando simulate`'s path).
        """)

    @OptionGroup var model: ModelOption
    @Option(help: "Federated rounds.") var rounds = 3
    @Option(help: "Folder of the embedded demo data.") var demoData = "deploy/demo"
    @Option(help: "Per-round metrics CSV to write.") var csv = "demo-rounds.csv"
    @Option(help: "Plot of test accuracy per round (SVG).") var plot = "demo-rounds.svg"
    @Option(help: "Coordinator state folder (versions, audit log, keys, school logs); continued if it exists.") var state = "demo-state"
    @Option(help: "How schools compress their deltas: none, float16, int8 or topk.") var compression: CompressionName = .none
    @Option(help: "Fraction of the trained values a top-k update sends.") var topkDensity = 0.01

    func run() async throws {
        let train = demoData + "/questions.train.csv", test = demoData + "/questions.test.csv"
        for file in [train, test] where !FileManager.default.fileExists(atPath: file) {
            throw ValidationError("\(file) not found: run `pando demo` from the repository root, or pass --demo-data")
        }
        var arguments = [
            "--data", train, "--test", test, "--schools", "3", "--alpha", "1.0", "--rounds", "\(rounds)",
            "--strategy", "fedavg", "--local-epochs", "1", "--learning-rate", "1e-4", "--batch-size", "32",
            "--max-length", "64", "--csv", csv, "--plot", plot, "--seed", "42", "--centralized-epochs", "0",
            "--state", state, "--federation", "demo", "--compression", compression.rawValue, "--topk-density", "\(topkDensity)",
        ]
        if let folder = model.model { arguments += ["--model", folder] }
        let simulation = try SimulateCommand.parse(arguments)
        try await simulation.run()
    }
}
