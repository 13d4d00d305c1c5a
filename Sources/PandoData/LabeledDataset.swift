import Foundation

/// What to do with a row that cannot be used (empty text, empty or unknown label).
public enum BadRowPolicy: String, Codable, Sendable {
    /// Stop with an error naming file, line and column.
    case fail
    /// Leave the row out and count it in the `LoadReport`.
    case skip
}

/// Why a row was left out.
public enum SkipReason: String, Codable, CodingKeyRepresentable, Sendable, CaseIterable, Comparable {
    case emptyText = "empty-text"
    case missingLabel = "missing-label"
    case unknownLabel = "unknown-label"

    public static func < (a: SkipReason, b: SkipReason) -> Bool { a.rawValue < b.rawValue }
}

/// Counts of what loading kept and skipped, so skipped rows are never silent.
public struct LoadReport: Codable, Sendable, Equatable, CustomStringConvertible {
    /// How many first line numbers are remembered per reason.
    public static let maxLinesKept = 5

    public var file: String
    public var rowsRead = 0
    public var kept = 0
    public var skipped: [SkipReason: Int] = [:]
    /// The first few line numbers skipped for each reason.
    public var firstSkippedLines: [SkipReason: [Int]] = [:]

    public init(file: String) { self.file = file }

    public var totalSkipped: Int { skipped.values.reduce(0, +) }

    mutating func skip(_ reason: SkipReason, line: Int) {
        skipped[reason, default: 0] += 1
        if firstSkippedLines[reason, default: []].count < Self.maxLinesKept {
            firstSkippedLines[reason, default: []].append(line)
        }
    }

    public var description: String {
        var s = "\(file): \(rowsRead) rows read, \(kept) kept"
        for reason in skipped.keys.sorted() {
            let lines = firstSkippedLines[reason, default: []].map(String.init).joined(separator: ", ")
            let more = skipped[reason]! > (firstSkippedLines[reason]?.count ?? 0) ? ", …" : ""
            s += "; skipped \(skipped[reason]!) \(reason.rawValue) (lines \(lines)\(more))"
        }
        return s
    }
}

/// One labeled text and the line it came from.
public struct Example: Sendable, Equatable, Codable {
    public var text: String
    public var target: Target
    /// 1-based line where the record starts in the source file (0 if not from a file).
    public var line: Int

    public init(text: String, target: Target, line: Int = 0) {
        self.text = text
        self.target = target
        self.line = line
    }
}

/// Labeled texts for one task, with their label map and a report of what was skipped.
public struct LabeledDataset: Sendable {
    public var task: TaskKind
    /// Label names ↔ indices; empty for regression.
    public var labels: LabelMap
    public var examples: [Example]
    public var report: LoadReport

    public init(task: TaskKind, labels: LabelMap, examples: [Example], report: LoadReport? = nil) {
        self.task = task
        self.labels = labels
        self.examples = examples
        var r = report ?? LoadReport(file: "<memory>")
        if report == nil { r.rowsRead = examples.count; r.kept = examples.count }
        self.report = r
    }

    public var count: Int { examples.count }

    /// A dataset holding the examples at `indices` (same labels, report and task).
    public func subset(_ indices: [Int]) -> LabeledDataset {
        var d = self
        d.examples = indices.map { examples[$0] }
        return d
    }

    /// Class index per example (classification only; nil otherwise).
    public var classIndices: [Int]? {
        guard task == .classification else { return nil }
        return examples.map { $0.target.classIndex! }
    }

    /// Examples per label (classification: per class; multi-label: per label occurrence).
    public var labelCounts: [Int] {
        var counts = [Int](repeating: 0, count: labels.count)
        for e in examples {
            switch e.target {
            case .classIndex(let c): counts[c] += 1
            case .labelSet(let s): for c in s { counts[c] += 1 }
            case .score: break
            }
        }
        return counts
    }

    /// Loads a labeled data set from CSV (.csv), TSV (.tsv) or JSON Lines (.jsonl,
    /// .ndjson, .json with one object per line).
    ///
    /// - Classification: the label column holds a name (JSON numbers are read as their
    ///   decimal text). Multi-label: a string split on `multiLabelDelimiter` (parts
    ///   trimmed, empty parts dropped; an empty cell is the empty set) or a JSON list.
    ///   Regression: a finite number (a JSON number or numeric text); anything else is
    ///   an error naming line and column whatever the policy.
    /// - Without `labels`, the map is built from the kept rows, sorted by name. With
    ///   `labels`, a label outside it is a bad row.
    /// - Bad rows (empty/whitespace-only text, empty label for classification or
    ///   regression, unknown label) fail or are skipped and counted per `policy`.
    /// - No data rows, or no rows left after skipping, is an error.
    public static func load(
        file: URL,
        textColumn: String = "text",
        labelColumn: String = "label",
        task: TaskKind,
        labels: LabelMap? = nil,
        policy: BadRowPolicy = .fail,
        multiLabelDelimiter: String = "|"
    ) throws -> LabeledDataset {
        let table = try Table.read(url: file, columns: [textColumn, labelColumn])
        return try LabeledDataset(table: table, textColumn: textColumn, labelColumn: labelColumn,
                                  task: task, labels: labels, policy: policy,
                                  multiLabelDelimiter: multiLabelDelimiter)
    }

    /// Builds a data set from an already read table (see `load` for the rules).
    public init(
        table: Table,
        textColumn: String = "text",
        labelColumn: String = "label",
        task: TaskKind,
        labels: LabelMap? = nil,
        policy: BadRowPolicy = .fail,
        multiLabelDelimiter: String = "|"
    ) throws {
        let file = table.file
        let textIndex = try table.columnIndex(textColumn)
        let labelIndex = try table.columnIndex(labelColumn)
        guard !table.rows.isEmpty else { throw DataError(.noRows, file: file) }
        if task == .multiLabel, multiLabelDelimiter.isEmpty {
            throw DataError(.invalidArgument("multi-label delimiter must not be empty"))
        }
        var report = LoadReport(file: file)
        report.rowsRead = table.rows.count

        func bad(_ reason: SkipReason, _ error: DataError.Reason, line: Int, column: String) throws {
            if policy == .fail { throw DataError(error, file: file, line: line, column: column) }
            report.skip(reason, line: line)
        }

        // First pass: texts and raw label names / scores.
        enum Raw { case one(String), many([String]), score(Float) }
        var kept: [(text: String, raw: Raw, line: Int)] = []
        kept.reserveCapacity(table.rows.count)
        rows: for row in table.rows {
            let text = row.values[textIndex].text
            if text.unicodeScalars.allSatisfy(\.properties.isWhitespace) {
                try bad(.emptyText, .emptyText, line: row.line, column: textColumn)
                continue
            }
            let cell = row.values[labelIndex]
            let raw: Raw
            switch task {
            case .classification, .ordinal:
                let name = trimmed(cell.text)
                if name.isEmpty {
                    try bad(.missingLabel, .missingLabel, line: row.line, column: labelColumn)
                    continue rows
                }
                raw = .one(name)
            case .multiLabel:
                let parts: [String]
                if case .list(let items) = cell {
                    parts = items.map(trimmed).filter { !$0.isEmpty }
                } else {
                    parts = cell.text.components(separatedBy: multiLabelDelimiter)
                        .map(trimmed).filter { !$0.isEmpty }
                }
                raw = .many(parts)
            case .regression:
                let x: Double
                switch cell {
                case .number(let v): x = v
                case .string(let s):
                    let t = trimmed(s)
                    if t.isEmpty {
                        try bad(.missingLabel, .missingLabel, line: row.line, column: labelColumn)
                        continue rows
                    }
                    guard let v = Double(t) else {
                        throw DataError(.invalidNumber(s), file: file, line: row.line, column: labelColumn)
                    }
                    x = v
                case .list:
                    throw DataError(.unsupportedValue("array"), file: file, line: row.line, column: labelColumn)
                }
                guard x.isFinite, Float(x).isFinite else {
                    throw DataError(.invalidNumber(cell.text), file: file, line: row.line, column: labelColumn)
                }
                raw = .score(Float(x))
            }
            kept.append((text, raw, row.line))
        }

        // Label map: given, or observed (sorted by name).
        let map: LabelMap
        if let labels {
            map = labels
        } else {
            switch task {
            case .classification:
                var names: [String] = []
                for k in kept { if case .one(let n) = k.raw { names.append(n) } }
                map = LabelMap(observed: names)
            case .multiLabel:
                var names: [String] = []
                for k in kept { if case .many(let ns) = k.raw { names += ns } }
                map = LabelMap(observed: names)
            case .regression:
                map = try! LabelMap(names: [])
            case .ordinal:
                // Levels must be in order: numeric names by value, others by name (give
                // the labels explicitly when their order is not that).
                var names: [String] = []
                for k in kept { if case .one(let n) = k.raw { names.append(n) } }
                let observed = LabelMap(observed: names).names
                let values = observed.map { Double($0) }
                map = try LabelMap(names: values.allSatisfy { $0 != nil }
                    ? zip(observed, values).sorted { $0.1! < $1.1! }.map(\.0) : observed)
            }
        }

        var examples: [Example] = []
        examples.reserveCapacity(kept.count)
        for k in kept {
            switch k.raw {
            case .one(let name):
                guard let c = map.index(of: name) else {
                    try bad(.unknownLabel, .unknownLabel(name, known: map.names), line: k.line, column: labelColumn)
                    continue
                }
                examples.append(Example(text: k.text, target: .classIndex(c), line: k.line))
            case .many(let names):
                var set: [Int] = []
                var unknown: String?
                for name in names {
                    if let c = map.index(of: name) { set.append(c) } else { unknown = name; break }
                }
                if let unknown {
                    try bad(.unknownLabel, .unknownLabel(unknown, known: map.names), line: k.line, column: labelColumn)
                    continue
                }
                examples.append(Example(text: k.text, target: .labelSet(Array(Set(set)).sorted()), line: k.line))
            case .score(let x):
                examples.append(Example(text: k.text, target: .score(x), line: k.line))
            }
        }
        report.kept = examples.count
        if examples.isEmpty {
            throw DataError(.invalidArgument("no usable rows: \(report)"), file: file)
        }
        self.init(task: task, labels: map, examples: examples, report: report)
    }
}

/// Trims spaces/tabs (and other Unicode whitespace) at both ends; no copy when none.
func trimmed(_ s: String) -> String {
    let scalars = s.unicodeScalars
    guard let first = scalars.first, let last = scalars.last,
          first.properties.isWhitespace || last.properties.isWhitespace else { return s }
    return s.trimmingCharacters(in: .whitespacesAndNewlines)
}
