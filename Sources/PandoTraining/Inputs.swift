import Foundation
import PandoData

/// Texts to predict on or embed, with the line each came from.
public struct TextInput: Sendable {
    public var line: Int?
    public var text: String

    public init(line: Int?, text: String) {
        self.line = line
        self.text = text
    }

    /// A .csv/.tsv/.jsonl file's `textColumn`, or a plain text file with one text per line
    /// (blank lines skipped).
    public static func read(file: URL, textColumn: String) throws -> [TextInput] {
        if (try? FileFormat(url: file)) != nil {
            let table = try Table.read(url: file, columns: [textColumn])
            let index = try table.columnIndex(textColumn)
            return table.rows.map { TextInput(line: $0.line, text: $0.values[index].text) }
        }
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw TrainingError("\(file.path): cannot read the file")
        }
        return lines(data, file: file.path)
    }

    /// One text per line of UTF-8 `data` (blank lines skipped).
    public static func lines(_ data: Data, file: String) -> [TextInput] {
        var text = String(decoding: data, as: UTF8.self)
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        var result: [TextInput] = []
        var n = 0
        text.enumerateLines { line, _ in
            n += 1
            if !line.allSatisfy(\.isWhitespace) { result.append(TextInput(line: n, text: line)) }
        }
        return result
    }
}

/// How the CLI reads labeled files.
public struct DataFormat: Sendable {
    public var textColumn = "text"
    public var labelColumn = "label"
    public var task: TaskKind
    public var policy: BadRowPolicy = .fail
    public var multiLabelDelimiter = "|"

    public init(task: TaskKind) { self.task = task }

    public func load(_ file: URL, labels: LabelMap?) throws -> LabeledDataset {
        guard FileManager.default.fileExists(atPath: file.path) else { throw TrainingError("\(file.path): no such file") }
        return try LabeledDataset.load(file: file, textColumn: textColumn, labelColumn: labelColumn, task: task,
                                       labels: task == .regression ? nil : labels, policy: policy,
                                       multiLabelDelimiter: multiLabelDelimiter)
    }
}
