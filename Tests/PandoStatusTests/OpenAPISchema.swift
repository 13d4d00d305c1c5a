import Foundation
import PandoTestSupport
import Yams

/// A checker for the part of OpenAPI 3.0's schema language `deploy/status-api.openapi.yaml`
/// uses: `$ref`, `type`, `required`, `properties`, `additionalProperties` (false or a
/// schema), `items`, `enum`, `minimum`, `maximum`, `pattern`, `nullable`, `allOf` and
/// `format: date-time`. A keyword it does not know is an error, so the document cannot
/// grow a rule the tests silently ignore.
struct OpenAPISchema {
    let document: [String: Any]

    static func load() throws -> OpenAPISchema {
        let url = TestFixtures.repository.appendingPathComponent("deploy/status-api.openapi.yaml")
        guard let document = try Yams.load(yaml: String(contentsOf: url, encoding: .utf8)) as? [String: Any] else {
            throw Failure("\(url.path) is not a YAML mapping")
        }
        return OpenAPISchema(document: document)
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static let known: Set<String> = ["$ref", "type", "required", "properties", "additionalProperties", "items", "enum", "minimum",
                                     "maximum", "pattern", "nullable", "allOf", "format", "description"]

    /// The schema of `name` under components/schemas.
    func schema(_ name: String) throws -> [String: Any] {
        guard let s = ((document["components"] as? [String: Any])?["schemas"] as? [String: Any])?[name] as? [String: Any] else {
            throw Failure("no schema \(name)")
        }
        return s
    }

    /// The JSON schema of the response `name` under components/responses.
    func response(_ name: String) throws -> [String: Any] {
        let responses = (document["components"] as? [String: Any])?["responses"] as? [String: Any]
        guard let s = (((responses?[name] as? [String: Any])?["content"] as? [String: Any])?["application/json"] as? [String: Any])?["schema"] as? [String: Any] else {
            throw Failure("no JSON response \(name)")
        }
        return s
    }

    /// `data` (JSON) parsed with Yams (JSON is YAML): booleans, integers and floats come out as
    /// Bool, Int and Double, which JSONSerialization's NSNumber would blur.
    static func parse(_ data: Data) throws -> Any {
        guard let text = String(data: data, encoding: .utf8), let value = try Yams.load(yaml: text) else { throw Failure("not JSON") }
        return value
    }

    /// The problems of `value` (parsed by `parse`) against `schema`; empty when it conforms.
    func problems(_ value: Any, against schema: [String: Any], at path: String = "$") throws -> [String] {
        if let unknown = schema.keys.first(where: { !Self.known.contains($0) }) { throw Failure("\(path): unsupported keyword \(unknown)") }
        if let ref = schema["$ref"] as? String {
            guard ref.hasPrefix("#/components/schemas/") else { throw Failure("\(path): unsupported $ref \(ref)") }
            return try problems(value, against: try self.schema(String(ref.dropFirst("#/components/schemas/".count))), at: path)
        }
        if value is NSNull {
            return schema["nullable"] as? Bool == true ? [] : ["\(path): null is not allowed"]
        }
        var found: [String] = []
        for part in schema["allOf"] as? [[String: Any]] ?? [] { found += try problems(value, against: part, at: path) }
        if let type = schema["type"] as? String {
            let number: Double? = (value as? Int).map(Double.init) ?? (value as? Double)
            switch type {
            case "object":
                guard let object = value as? [String: Any] else { return found + ["\(path): expected an object"] }
                let properties = schema["properties"] as? [String: Any] ?? [:]
                for key in schema["required"] as? [String] ?? [] where object[key] == nil { found.append("\(path): missing required \(key)") }
                for (key, v) in object {
                    if let p = properties[key] as? [String: Any] {
                        found += try problems(v, against: p, at: "\(path).\(key)")
                    } else if let extra = schema["additionalProperties"] as? [String: Any] {
                        found += try problems(v, against: extra, at: "\(path).\(key)")
                    } else if schema["additionalProperties"] as? Bool == false {
                        found.append("\(path): unexpected property \(key)")
                    }
                }
            case "array":
                guard let array = value as? [Any] else { return found + ["\(path): expected an array"] }
                if let items = schema["items"] as? [String: Any] {
                    for (i, v) in array.enumerated() { found += try problems(v, against: items, at: "\(path)[\(i)]") }
                }
            case "string":
                guard let s = value as? String else { return found + ["\(path): expected a string"] }
                if let pattern = schema["pattern"] as? String, s.range(of: pattern, options: .regularExpression) == nil {
                    found.append("\(path): '\(s)' does not match \(pattern)")
                }
                if schema["format"] as? String == "date-time" {
                    let f = ISO8601DateFormatter()
                    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                    let plain = ISO8601DateFormatter()
                    if f.date(from: s) == nil && plain.date(from: s) == nil { found.append("\(path): '\(s)' is not a date-time") }
                }
            case "integer":
                guard value is Int else { return found + ["\(path): expected an integer"] }
            case "number":
                guard let n = number, n.isFinite else { return found + ["\(path): expected a finite number"] }
            case "boolean":
                guard value is Bool else { return found + ["\(path): expected a boolean"] }
            default:
                throw Failure("\(path): unsupported type \(type)")
            }
            if let n = number {
                func bound(_ key: String) -> Double? { (schema[key] as? Int).map(Double.init) ?? (schema[key] as? Double) }
                if let min = bound("minimum"), n < min { found.append("\(path): \(n) < minimum \(min)") }
                if let max = bound("maximum"), n > max { found.append("\(path): \(n) > maximum \(max)") }
            }
        }
        if let options = schema["enum"] as? [Any] {
            let allowed = options.map { "\($0)" }
            if !allowed.contains("\(value)") { found.append("\(path): '\(value)' is not one of \(allowed)") }
        }
        return found
    }
}
