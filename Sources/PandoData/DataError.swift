/// An error reading or interpreting a data file. Its description names the file,
/// the 1-based line where the offending record starts, and the column, so a person
/// can find and fix the problem.
public struct DataError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong.
    public enum Reason: Sendable, Equatable {
        case unreadable(String)
        case unsupportedFormat(String)
        case noHeader
        case duplicateColumn(String)
        case unterminatedQuote
        case unexpectedCharacterAfterQuote
        case wrongFieldCount(expected: Int, found: Int)
        case invalidUTF8
        case missingColumn(available: [String])
        case invalidJSON(String)
        case unsupportedValue(String)
        case emptyText
        case missingLabel
        case unknownLabel(String, known: [String])
        case invalidNumber(String)
        case noRows
        case invalidArgument(String)
    }

    public var file: String?
    public var line: Int?
    public var column: String?
    public var reason: Reason

    public init(_ reason: Reason, file: String? = nil, line: Int? = nil, column: String? = nil) {
        self.reason = reason
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String {
        var place = file ?? "<data>"
        if let line { place += ":\(line)" }
        if let column { place += ": column '\(column)'" }
        return "\(place): \(message)"
    }

    private var message: String {
        switch reason {
        case .unreadable(let why): return "cannot read file (\(why))"
        case .unsupportedFormat(let ext):
            return "unsupported file type '\(ext)' (use .csv, .tsv, .jsonl, .ndjson or .json with one object per line)"
        case .noHeader: return "file is empty: a header row is required"
        case .duplicateColumn(let name): return "duplicate column name '\(name)' in header"
        case .unterminatedQuote: return "unterminated quoted field (opening quote starts on this line)"
        case .unexpectedCharacterAfterQuote:
            return "unexpected character after closing quote (a quote inside a quoted field must be doubled: \"\")"
        case .wrongFieldCount(let expected, let found):
            return "wrong number of fields: expected \(expected) as in the header, found \(found)"
        case .invalidUTF8: return "invalid UTF-8"
        case .missingColumn(let available):
            return "missing column; columns present: \(available.map { "'\($0)'" }.joined(separator: ", "))"
        case .invalidJSON(let detail): return "invalid JSON on line \(line.map(String.init) ?? "?"): \(detail)"
        case .unsupportedValue(let kind):
            return "unsupported value of type \(kind) (expected a string or a number)"
        case .emptyText: return "text is empty or whitespace only"
        case .missingLabel: return "label is empty"
        case .unknownLabel(let label, let known):
            let shown = known.prefix(20).map { "'\($0)'" }.joined(separator: ", ")
            return "unknown label '\(label)' (known: \(shown)\(known.count > 20 ? ", …" : ""))"
        case .invalidNumber(let value): return "'\(value)' is not a finite number"
        case .noRows: return "no data rows"
        case .invalidArgument(let why): return why
        }
    }
}
