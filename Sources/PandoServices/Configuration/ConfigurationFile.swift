import Foundation
import Yams

/// A configuration file problem, naming the file and the field.
public struct ConfigurationError: Error, CustomStringConvertible {
    public let file: String
    public let field: String?
    public let reason: String

    public init(file: String, field: String? = nil, _ reason: String) {
        self.file = file
        self.field = field
        self.reason = reason
    }

    public var description: String {
        field.map { "\(file): \($0): \(reason)" } ?? "\(file): \(reason)"
    }
}

/// Reads YAML configuration files into `Decodable` values with errors that name the
/// file, the field path (`local.learning_rate`) and, for syntax errors, the line.
enum ConfigurationFile {
    static func load<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ConfigurationError(file: url.path, "cannot read the file (\(error.localizedDescription))")
        }
        return try decode(type, from: text, file: url.path)
    }

    static func decode<T: Decodable>(_ type: T.Type, from text: String, file: String) throws -> T {
        do {
            return try YAMLDecoder().decode(type, from: text)
        } catch let error as DecodingError {
            throw describe(error, file: file)
        } catch let error as YamlError {
            throw ConfigurationError(file: file, "not valid YAML: \(error)")
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError(file: file, "\(error)")
        }
    }

    static func path(_ keys: [CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }

    static func describe(_ error: DecodingError, file: String) -> ConfigurationError {
        switch error {
        case .keyNotFound(let key, let context):
            return ConfigurationError(file: file, field: path(context.codingPath + [key]), "missing (required)")
        case .typeMismatch(let type, let context):
            return ConfigurationError(file: file, field: path(context.codingPath), "expected \(typeName(type))")
        case .valueNotFound(let type, let context):
            return ConfigurationError(file: file, field: path(context.codingPath), "expected \(typeName(type)), found nothing")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            return ConfigurationError(file: file, field: field.isEmpty ? nil : field, context.debugDescription)
        @unknown default:
            return ConfigurationError(file: file, "\(error)")
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "text"
        case is Int.Type, is UInt64.Type: return "a whole number"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        default:
            let name = "\(type)"
            return name.hasPrefix("Array") ? "a list" : name.hasPrefix("Dictionary") ? "a mapping" : "a \(name)"
        }
    }
}

/// Any key of a mapping, to list the unknown ones.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension Decoder {
    /// Throws if the mapping being decoded has a key outside `K`.
    func rejectUnknownKeys<K: CodingKey & CaseIterable & RawRepresentable>(_ known: K.Type) throws where K.RawValue == String {
        let container = try self.container(keyedBy: AnyKey.self)
        let allowed = Set(K.allCases.map(\.rawValue))
        for key in container.allKeys where !allowed.contains(key.stringValue) {
            throw DecodingError.dataCorrupted(.init(
                codingPath: codingPath + [key],
                debugDescription: "unknown setting (known here: \(allowed.sorted().joined(separator: ", ")))"))
        }
    }
}

/// Resolves a path from a configuration file: relative paths are relative to the file's folder.
func resolve(_ path: String, relativeTo file: URL) -> URL {
    let expanded = (path as NSString).expandingTildeInPath
    if expanded.hasPrefix("/") { return URL(fileURLWithPath: expanded) }
    return file.deletingLastPathComponent().appendingPathComponent(expanded).standardizedFileURL
}
