import ArgumentParser
import Foundation
import PandoTraining

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Predict labels, probabilities or scores for texts; JSON Lines on standard output.",
        discussion: """
        Input: --text, or --file (a .csv/.tsv/.jsonl file's --text-column, or plain text with one text per \
        line), or standard input (one text per line). Output, one JSON object per text: "label" and \
        "probabilities" (softmax) for classification, "labels" and "probabilities" (sigmoid, thresholded per \
        label) for multi-label, "score" for regression; "line" when read from a file.

        --explain adds "tokens" (word pieces, special tokens included) and "words" (pieces merged) with a \
        signed attribution each: gradient × input, the gradient of the explained output (the log-probability \
        of the predicted class, log-sigmoid of the most probable label, or the score) with respect to each \
        token's input embedding, dotted with the token's word embedding (the summed embedding would give \
        exactly zero, since the embedding LayerNorm is scale-invariant). Positive tokens pushed the output \
        up; words sum their pieces. We use \
        gradient × input rather than attention rollout because it follows the head actually being \
        explained through every layer (attention weights say where a layer looked, not what changed the \
        output), costs one backward pass, and is exact for the model's first-order behaviour.
        """)

    @Option(help: "Fine-tuned checkpoint folder.") var model: String
    @Option(help: "One text to predict.") var text: String?
    @Option(help: "File of texts.") var file: String?
    @Option(help: "Column holding the text in a .csv/.tsv/.jsonl --file.") var textColumn = "text"
    @Option(help: "Sequences per batch.") var batchSize = 64
    @Flag(help: "Add per-token gradient × input attributions.") var explain = false
    @Flag(help: "Run the int8-quantised encoder for the predictions (attributions stay float32).") var int8 = false

    func run() throws {
        let checkpoint = try FineTunedModel(folder: URL(fileURLWithPath: model))
        if int8 { checkpoint.model.quantizeForInference() }
        let inputs: [TextInput]
        if let text {
            guard file == nil else { throw ValidationError("give --text or --file, not both") }
            inputs = [TextInput(line: nil, text: text)]
        } else if let file {
            inputs = try TextInput.read(file: URL(fileURLWithPath: file), textColumn: textColumn)
        } else {
            inputs = TextInput.lines(FileHandle.standardInput.readDataToEndOfFile(), file: "<stdin>")
        }
        var out = FileHandle.standardOutput
        // Stream in chunks so a large file prints as it goes.
        let chunk = max(batchSize, 1) * 16
        for start in stride(from: 0, to: inputs.count, by: chunk) {
            let part = Array(inputs[start..<min(start + chunk, inputs.count)])
            let texts = part.map(\.text)
            let predictions = checkpoint.predict(texts, batchSize: batchSize)
            let explanations = explain ? try checkpoint.explain(texts) : nil
            var buffer = ""
            for (i, p) in predictions.enumerated() {
                buffer += try PredictionOutput.json(p, labels: checkpoint.labels, line: part[i].line, explanation: explanations?[i]) + "\n"
            }
            print(buffer, terminator: "", to: &out)
        }
    }
}

extension FileHandle: @retroactive TextOutputStream {
    public func write(_ string: String) { write(Data(string.utf8)) }
}
