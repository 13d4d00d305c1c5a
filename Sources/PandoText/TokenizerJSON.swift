import Foundation

/// A JSON value as tokenizer files need it: objects keep their members in file order as
/// (key, value) pairs, never in a Swift `Dictionary`, whose `String` keys compare by
/// canonical equivalence and would merge vocabulary entries such as precomposed "é" and
/// "e" + U+0301 that Hugging Face keeps apart.
indirect enum TokenizerJSON: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([TokenizerJSON])
    case object([(String, TokenizerJSON)])

    /// The member `key` of an object (first match by scalars), or nil.
    subscript(key: String) -> TokenizerJSON? {
        guard case .object(let members) = self else { return nil }
        let k = Array(key.unicodeScalars)
        return members.first { Array($0.0.unicodeScalars) == k }?.1
    }

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    var int: Int? {
        if case .number(let d) = self, d == d.rounded(), abs(d) < 1e15 { Int(d) } else { nil }
    }
    var isNull: Bool { if case .null = self { true } else { false } }

    /// Parses `data`; errors name `path` and the byte offset.
    static func parse(_ data: Data, path: String) throws -> TokenizerJSON {
        var p = Parser(bytes: [UInt8](data), path: path)
        p.skipSpace()
        let value = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == p.bytes.count else { throw p.error("unexpected text after the JSON value") }
        return value
    }

    /// Reads and parses a file; errors name it.
    static func read(_ url: URL) throws -> TokenizerJSON {
        guard FileManager.default.fileExists(atPath: url.path) else { throw BertTokenizerError.fileNotFound(path: url.path) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw BertTokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        return try parse(data, path: url.path)
    }

    private struct Parser {
        let bytes: [UInt8]
        let path: String
        var i = 0

        init(bytes: [UInt8], path: String) {
            self.bytes = bytes
            self.path = path
        }

        func error(_ reason: String) -> BertTokenizerError {
            .unreadableFile(path: path, reason: "invalid JSON at byte \(i): \(reason)")
        }

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }

        mutating func expect(_ literal: String) throws {
            for b in literal.utf8 {
                guard i < bytes.count, bytes[i] == b else { throw error("expected '\(literal)'") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> TokenizerJSON {
            guard depth < 64 else { throw error("nested too deeply") }
            guard i < bytes.count else { throw error("unexpected end of file") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var members: [(String, TokenizerJSON)] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                    let key = try string()
                    skipSpace()
                    try expect(":")
                    skipSpace()
                    members.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard i < bytes.count else { throw error("unexpected end of file in an object") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                    throw error("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [TokenizerJSON] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw error("unexpected end of file in an array") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw error("expected ',' or ']'")
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            default: return .number(try number())
            }
        }

        mutating func number() throws -> Double {
            let start = i
            while i < bytes.count, "+-0123456789.eE".utf8.contains(bytes[i]) { i += 1 }
            guard i > start, let text = String(bytes: bytes[start..<i], encoding: .ascii), let d = Double(text) else {
                throw error("expected a value")
            }
            return d
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count, let text = String(bytes: bytes[i..<i + 4], encoding: .ascii), let v = UInt32(text, radix: 16) else {
                throw error("bad \\u escape")
            }
            i += 4
            return v
        }

        mutating func string() throws -> String {
            i += 1  // opening quote
            var scalars = String.UnicodeScalarView()
            var runStart = i
            func flush(_ end: Int) throws {
                guard end > runStart else { return }
                guard let s = String(validating: bytes[runStart..<end], as: UTF8.self) else { throw error("invalid UTF-8 in a string") }
                scalars.append(contentsOf: s.unicodeScalars)
            }
            while true {
                guard i < bytes.count else { throw error("unterminated string") }
                let b = bytes[i]
                if b == UInt8(ascii: "\"") {
                    try flush(i)
                    i += 1
                    return String(scalars)
                }
                if b == UInt8(ascii: "\\") {
                    try flush(i)
                    i += 1
                    guard i < bytes.count else { throw error("unterminated escape") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""): scalars.append("\"")
                    case UInt8(ascii: "\\"): scalars.append("\\")
                    case UInt8(ascii: "/"): scalars.append("/")
                    case UInt8(ascii: "b"): scalars.append("\u{8}")
                    case UInt8(ascii: "f"): scalars.append("\u{c}")
                    case UInt8(ascii: "n"): scalars.append("\n")
                    case UInt8(ascii: "r"): scalars.append("\r")
                    case UInt8(ascii: "t"): scalars.append("\t")
                    case UInt8(ascii: "u"):
                        var v = try hex4()
                        if (0xD800..<0xDC00).contains(v), i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                            i += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
                            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let s = Unicode.Scalar(v) else { throw error("unpaired surrogate") }
                        scalars.append(s)
                    default: throw error("unknown escape")
                    }
                    runStart = i
                    continue
                }
                if b < 0x20 { throw error("control character in a string") }
                i += 1
            }
        }
    }
}
