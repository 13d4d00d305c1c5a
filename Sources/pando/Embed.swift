import ArgumentParser
import Foundation
import PandoEngine
import PandoTraining

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Sentence embeddings (mean-pooled, L2-normalised as sentence-transformers does) as JSON Lines or .npy.",
        discussion: "Pooling and normalisation follow the model folder's 1_Pooling/config.json and modules.json; truncation follows sentence_bert_config.json's max_seq_length. For all-MiniLM-L6-v2 the vectors match sentence-transformers within 1e-4.")

    @OptionGroup var model: ModelOption
    @Option(help: "One text.") var text: String?
    @Option(help: "File of texts (a .csv/.tsv/.jsonl file's --text-column, or one text per line); default: standard input.") var file: String?
    @Option(help: "Column holding the text in a .csv/.tsv/.jsonl --file.") var textColumn = "text"
    @Option(help: "Write a float32 N×D .npy file here instead of JSON Lines on standard output.") var npy: String?
    @Option(help: "Tokens per text (default: the folder's max_seq_length).") var maxLength: Int?
    @Flag(inversion: .prefixedNo, help: "L2-normalise (default: as modules.json says).") var normalize: Bool?
    @Option(help: "Sequences per batch.") var batchSize = 64

    func run() throws {
        let embedder = try Embedder(folder: try model.resolve(), maxLength: maxLength, normalize: normalize)
        let inputs: [TextInput]
        if let text { inputs = [TextInput(line: nil, text: text)] }
        else if let file { inputs = try TextInput.read(file: URL(fileURLWithPath: file), textColumn: textColumn) }
        else { inputs = TextInput.lines(FileHandle.standardInput.readDataToEndOfFile(), file: "<stdin>") }
        let vectors = embedder.embed(inputs.map(\.text), batchSize: batchSize)
        if let npy {
            try AtomicFile.write(NPY.encode(vectors), to: URL(fileURLWithPath: npy))
            FileHandle.standardError.write(Data("wrote \(vectors.count) × \(embedder.dimension) to \(npy)\n".utf8))
            return
        }
        var out = FileHandle.standardOutput
        for (input, v) in zip(inputs, vectors) {
            var s = "{"
            if let line = input.line { s += "\"line\":\(line)," }
            s += "\"embedding\":[" + v.map { "\($0)" }.joined(separator: ",") + "]}\n"
            print(s, terminator: "", to: &out)
        }
    }
}
