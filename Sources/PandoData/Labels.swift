/// The kind of prediction a model makes.
public enum TaskKind: String, Codable, Sendable, CaseIterable {
    /// One class per text.
    case classification
    /// Any subset of the labels per text.
    case multiLabel = "multi-label"
    /// One number per text.
    case regression
    /// One of ordered levels per text (reading level, difficulty), the labels in their order.
    case ordinal

    /// The fewest label names the task makes sense with (a score needs none).
    public var minimumLabels: Int {
        switch self {
        case .classification, .ordinal: 2
        case .multiLabel: 1
        case .regression: 0
        }
    }
}

/// Ordered label names and their indices (the model's output positions).
/// Encodes as a JSON array of names, index = position.
public struct LabelMap: Codable, Sendable, Equatable, CustomStringConvertible {
    public let names: [String]
    private let index: [String: Int]

    /// Labels given explicitly, in output order. Names must be unique and non-empty.
    public init(names: [String]) throws {
        var index: [String: Int] = [:]
        for (i, name) in names.enumerated() {
            if name.isEmpty { throw DataError(.invalidArgument("label names must be non-empty")) }
            if index.updateValue(i, forKey: name) != nil {
                throw DataError(.invalidArgument("duplicate label name '\(name)'"))
            }
        }
        self.names = names
        self.index = index
    }

    /// The distinct labels seen in data, sorted by name (Swift `String` order, which is
    /// code-point order for ASCII) so the map does not depend on row order.
    public init<S: Sequence>(observed: S) where S.Element == String {
        let sorted = Set(observed).filter { !$0.isEmpty }.sorted()
        try! self.init(names: sorted)
    }

    public var count: Int { names.count }

    /// Index of a label name, or nil if unknown.
    public func index(of name: String) -> Int? { index[name] }

    public func name(at index: Int) -> String { names[index] }

    /// Hugging Face `config.json` style `id2label` ("0": name).
    public var id2label: [String: String] {
        Dictionary(uniqueKeysWithValues: names.enumerated().map { (String($0.offset), $0.element) })
    }

    public var description: String { "LabelMap(\(names.joined(separator: ", ")))" }

    public init(from decoder: Decoder) throws {
        let names = try decoder.singleValueContainer().decode([String].self)
        do { try self.init(names: names) } catch let error as DataError {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(names)
    }
}

/// What a model should predict for one example.
public enum Target: Sendable, Equatable, Hashable, Codable {
    /// Index into the label map (classification).
    case classIndex(Int)
    /// Sorted, distinct indices of the labels that apply (multi-label, multi-hot).
    case labelSet([Int])
    /// A numeric score (regression).
    case score(Float)

    public var classIndex: Int? { if case .classIndex(let c) = self { return c } else { return nil } }
    public var labelSet: [Int]? { if case .labelSet(let s) = self { return s } else { return nil } }
    public var score: Float? { if case .score(let x) = self { return x } else { return nil } }

    /// Multi-hot vector of length `count` (1 for each label in the set; the class for
    /// classification).
    public func multiHot(count: Int) -> [Float] {
        var v = [Float](repeating: 0, count: count)
        switch self {
        case .classIndex(let c): v[c] = 1
        case .labelSet(let s): for c in s { v[c] = 1 }
        case .score: break
        }
        return v
    }
}
