import Foundation

/// One cell of a table. CSV cells are always strings; JSON Lines cells may also be
/// numbers or lists (for multi-label targets).
public enum FieldValue: Sendable, Equatable {
    case string(String)
    case number(Double)
    case list([String])

    /// The cell as text: numbers print without a trailing ".0" when integral; lists
    /// are joined with "|".
    public var text: String {
        switch self {
        case .string(let s): return s
        case .number(let x): return formatNumber(x)
        case .list(let items): return items.joined(separator: "|")
        }
    }
}

func formatNumber(_ x: Double) -> String {
    if x.rounded() == x, abs(x) < 1e15 { return String(Int64(x)) }
    return String(x)
}

/// Column names shared by all rows of a table (kept once, referenced by each row).
public final class TableHeader: Sendable {
    public let columns: [String]
    let index: [String: Int]

    init(_ columns: [String]) {
        self.columns = columns
        var index: [String: Int] = [:]
        for (i, c) in columns.enumerated() { index[c] = i }
        self.index = index
    }
}

/// A record of a table: values in column order plus the 1-based line where the
/// record starts in the file (records can span lines when quoted fields hold newlines).
public struct TableRow: Sendable {
    public let line: Int
    public let values: [FieldValue]
    let header: TableHeader

    /// The value of a named column, or nil if the table has no such column.
    public subscript(column: String) -> FieldValue? {
        guard let i = header.index[column] else { return nil }
        return values[i]
    }
}

/// Rows read from one file, keyed by column name.
public struct Table: Sendable {
    /// File name used in error messages.
    public let file: String
    public let header: TableHeader
    public let rows: [TableRow]

    public var columns: [String] { header.columns }

    /// Position of a column; throws a `DataError` listing the columns that exist.
    public func columnIndex(_ name: String) throws -> Int {
        guard let i = header.index[name] else {
            throw DataError(.missingColumn(available: columns), file: file, column: name)
        }
        return i
    }

    /// Reads a CSV, TSV or JSON Lines file, chosen by extension. For JSON Lines only
    /// `columns` are extracted (they are required); CSV ignores `columns`.
    public static func read(url: URL, columns: [String]) throws -> Table {
        switch try FileFormat(url: url) {
        case .csv: return try CSVReader().read(url: url)
        case .tsv: return try CSVReader(delimiter: "\t").read(url: url)
        case .jsonLines: return try JSONLinesReader().read(url: url, columns: columns)
        }
    }
}

/// File formats understood by `Table.read`.
public enum FileFormat: Sendable {
    case csv, tsv, jsonLines

    /// Picks the format from the extension: .csv, .tsv, .jsonl/.ndjson/.json (one object per line).
    public init(url: URL) throws {
        switch url.pathExtension.lowercased() {
        case "csv": self = .csv
        case "tsv", "tab": self = .tsv
        case "jsonl", "ndjson", "json": self = .jsonLines
        default: throw DataError(.unsupportedFormat(url.pathExtension), file: url.lastPathComponent)
        }
    }
}

func readBytes(_ url: URL) throws -> Data {
    do {
        return try Data(contentsOf: url)
    } catch {
        throw DataError(.unreadable(error.localizedDescription), file: url.lastPathComponent)
    }
}

// MARK: - CSV

/// An RFC 4180 reader: quoted fields, "" escapes, delimiters and newlines inside
/// quotes, CRLF or LF line ends, UTF-8 with or without BOM. The first non-blank
/// record is the header; blank lines are skipped. The whole file is parsed in one
/// pass over its bytes.
public struct CSVReader: Sendable {
    public var delimiter: UInt8

    /// - Parameter delimiter: a single ASCII character, "," by default ("\t" for TSV).
    public init(delimiter: Character = ",") {
        precondition(delimiter.isASCII && delimiter != "\"" && delimiter != "\n" && delimiter != "\r",
                     "CSV delimiter must be ASCII and not a quote or newline")
        self.delimiter = delimiter.asciiValue!
    }

    public func read(url: URL) throws -> Table {
        try parse(try readBytes(url), file: url.lastPathComponent)
    }

    /// Parses CSV bytes; `file` only names the source in errors.
    public func parse(_ data: Data, file: String = "<data>") throws -> Table {
        try data.withUnsafeBytes { raw in
            try parse(raw.bindMemory(to: UInt8.self), file: file)
        }
    }

    private func parse(_ buf: UnsafeBufferPointer<UInt8>, file: String) throws -> Table {
        let quote = UInt8(ascii: "\""), lf = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r")
        let delim = delimiter
        let n = buf.count
        var i = 0
        if n >= 3, buf[0] == 0xEF, buf[1] == 0xBB, buf[2] == 0xBF { i = 3 }
        var line = 1
        var header: TableHeader?
        var headerNames: [String] = []
        var rows: [TableRow] = []
        var fields: [FieldValue] = []
        var scratch: [UInt8] = []

        func columnName(_ k: Int) -> String {
            k < headerNames.count ? headerNames[k] : "field \(k + 1)"
        }
        func makeString(_ bytes: UnsafeBufferPointer<UInt8>, line: Int, field: Int) throws -> String {
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw DataError(.invalidUTF8, file: file, line: line, column: columnName(field))
            }
            return s
        }

        while i < n {
            // Skip blank lines between records.
            if buf[i] == lf { line += 1; i += 1; continue }
            if buf[i] == cr {
                i += 1
                if i < n, buf[i] == lf { i += 1 }
                line += 1
                continue
            }
            let recordLine = line
            fields.removeAll(keepingCapacity: true)
            var recordDone = false
            while !recordDone {
                let fieldLine = line
                if i < n, buf[i] == quote {
                    i += 1
                    var segStart = i
                    var escaped = false
                    scratch.removeAll(keepingCapacity: true)
                    while true {
                        guard i < n else {
                            throw DataError(.unterminatedQuote, file: file, line: fieldLine,
                                            column: columnName(fields.count))
                        }
                        let c = buf[i]
                        if c == quote {
                            if i + 1 < n, buf[i + 1] == quote {
                                escaped = true
                                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: buf[segStart...i]))
                                i += 2
                                segStart = i
                                continue
                            }
                            break
                        } else if c == lf {
                            line += 1
                        } else if c == cr, !(i + 1 < n && buf[i + 1] == lf) {
                            line += 1
                        }
                        i += 1
                    }
                    let value: String
                    if escaped {
                        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: buf[segStart..<i]))
                        value = try scratch.withUnsafeBufferPointer {
                            try makeString($0, line: fieldLine, field: fields.count)
                        }
                    } else {
                        value = try makeString(UnsafeBufferPointer(rebasing: buf[segStart..<i]),
                                               line: fieldLine, field: fields.count)
                    }
                    i += 1  // closing quote
                    fields.append(.string(value))
                    if i < n, buf[i] != delim, buf[i] != lf, buf[i] != cr {
                        throw DataError(.unexpectedCharacterAfterQuote, file: file, line: line,
                                        column: columnName(fields.count - 1))
                    }
                } else {
                    let start = i
                    while i < n {
                        let c = buf[i]
                        if c == delim || c == lf || c == cr { break }
                        i += 1
                    }
                    fields.append(.string(try makeString(UnsafeBufferPointer(rebasing: buf[start..<i]),
                                                         line: fieldLine, field: fields.count)))
                }
                // After a field: delimiter, line end or end of input.
                if i >= n {
                    recordDone = true
                } else if buf[i] == delim {
                    i += 1
                    if i >= n { fields.append(.string("")); recordDone = true }
                } else {
                    if buf[i] == cr { i += 1; if i < n, buf[i] == lf { i += 1 } } else { i += 1 }
                    line += 1
                    recordDone = true
                }
            }
            if let header {
                if fields.count != headerNames.count {
                    throw DataError(.wrongFieldCount(expected: headerNames.count, found: fields.count),
                                    file: file, line: recordLine)
                }
                rows.append(TableRow(line: recordLine, values: fields, header: header))
            } else {
                headerNames = fields.map { $0.text.trimmingCharacters(in: .whitespaces) }
                var seen = Set<String>()
                for name in headerNames where !seen.insert(name).inserted {
                    throw DataError(.duplicateColumn(name), file: file, line: recordLine)
                }
                header = TableHeader(headerNames)
                rows.reserveCapacity(n / 64)
            }
        }
        guard let header else { throw DataError(.noHeader, file: file) }
        return Table(file: file, header: header, rows: rows)
    }
}

// MARK: - JSON Lines

/// A JSON Lines reader: one JSON object per line, blank lines ignored. Only the
/// requested columns are extracted; each must be present on every line and hold a
/// string, a number, or (for multi-label targets) a list of strings/numbers.
public struct JSONLinesReader: Sendable {
    public init() {}

    public func read(url: URL, columns: [String]) throws -> Table {
        try parse(try readBytes(url), columns: columns, file: url.lastPathComponent)
    }

    /// Parses JSON Lines bytes; `file` only names the source in errors.
    public func parse(_ data: Data, columns: [String], file: String = "<data>") throws -> Table {
        let header = TableHeader(columns)
        var rows: [TableRow] = []
        // Find line ranges on raw bytes (much faster than searching `Data` by index).
        var ranges: [Range<Int>] = []
        data.withUnsafeBytes { raw in
            let buf = raw.bindMemory(to: UInt8.self)
            var i = 0
            if buf.count >= 3, buf[0] == 0xEF, buf[1] == 0xBB, buf[2] == 0xBF { i = 3 }
            var lineStart = i
            while i <= buf.count {
                if i == buf.count || buf[i] == UInt8(ascii: "\n") {
                    ranges.append(lineStart..<i)
                    lineStart = i + 1
                }
                i += 1
            }
        }
        rows.reserveCapacity(ranges.count)
        for (k, range) in ranges.enumerated() {
            let line = k + 1
            let blank: Bool = data.withUnsafeBytes { raw in
                raw[range].allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
            }
            if blank { continue }
            let slice = data.subdata(in: (data.startIndex + range.lowerBound)..<(data.startIndex + range.upperBound))
            let parsed: Any
            do {
                parsed = try JSONSerialization.jsonObject(with: slice, options: [.fragmentsAllowed])
            } catch {
                let detail = String(data: slice, encoding: .utf8) == nil ? "invalid UTF-8" : "malformed JSON"
                throw DataError(.invalidJSON(detail), file: file, line: line)
            }
            guard let object = parsed as? [String: Any] else {
                throw DataError(.invalidJSON("expected one JSON object per line, found \(jsonKind(parsed))"),
                                file: file, line: line)
            }
            var values: [FieldValue] = []
            values.reserveCapacity(columns.count)
            for column in columns {
                guard let v = object[column] else {
                    throw DataError(.missingColumn(available: object.keys.sorted()), file: file,
                                    line: line, column: column)
                }
                values.append(try jsonField(v, file: file, line: line, column: column))
            }
            rows.append(TableRow(line: line, values: values, header: header))
        }
        return Table(file: file, header: header, rows: rows)
    }
}

/// JSON type name of a `JSONSerialization` value (booleans are NSNumbers of ObjC type "c").
private func jsonKind(_ v: Any) -> String {
    if v is NSNull { return "null" }
    if v is String { return "string" }
    if let n = v as? NSNumber { return isBoolean(n) ? "boolean" : "number" }
    if v is [Any] { return "array" }
    if v is [String: Any] { return "object" }
    return "\(type(of: v))"
}

private func isBoolean(_ n: NSNumber) -> Bool {
    String(cString: n.objCType) == "c"
}

private func jsonField(_ v: Any, file: String, line: Int, column: String) throws -> FieldValue {
    if let s = v as? String { return .string(s) }
    if let n = v as? NSNumber, !isBoolean(n) { return .number(n.doubleValue) }
    if let items = v as? [Any] {
        return .list(try items.map { item in
            if let s = item as? String { return s }
            if let n = item as? NSNumber, !isBoolean(n) { return formatNumber(n.doubleValue) }
            throw DataError(.unsupportedValue("array of \(jsonKind(item))"), file: file, line: line, column: column)
        })
    }
    throw DataError(.unsupportedValue(jsonKind(v)), file: file, line: line, column: column)
}
