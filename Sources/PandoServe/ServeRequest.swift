import Foundation
import PandoLedger

/// What one request may carry; beyond these the server answers 413 and does no work.
public struct ServeLimits: Codable, Sendable, Equatable {
    /// Bytes of a request body.
    public var maxBodyBytes: Int
    /// Texts in one request.
    public var maxInputs: Int
    /// UTF-8 bytes of one text (texts are truncated to the model's max length in tokens anyway;
    /// this bounds the tokenizer's work).
    public var maxTextBytes: Int
    public init(maxBodyBytes: Int = 1 << 20, maxInputs: Int = 64, maxTextBytes: Int = 16 << 10) {
        self.maxBodyBytes = maxBodyBytes
        self.maxInputs = maxInputs
        self.maxTextBytes = maxTextBytes
    }
}

/// A refused request: the status and a message naming the field.
public struct RequestProblem: Error, Equatable, CustomStringConvertible {
    public let status: Int
    public let message: String
    public var description: String { "\(status): \(message)" }
    static func bad(_ message: String) -> RequestProblem { RequestProblem(status: 400, message: message) }
    static func tooLarge(_ message: String) -> RequestProblem { RequestProblem(status: 413, message: message) }
}

/// `{"inputs": "text"}` or `{"inputs": ["a", "b"]}`, optionally with
/// `"parameters": {"top_k": N}` (predict) and `"options": {…}` (accepted, ignored, as the
/// Hugging Face Inference API's `wait_for_model`).
public struct ServeRequest: Equatable, Sendable {
    public var texts: [String]
    /// Whether `inputs` was one string (the answer is still one list per input).
    public var single: Bool
    public var topK: Int?

    /// Parses a body already within `limits.maxBodyBytes`.
    public static func parse(_ body: Data, limits: ServeLimits, allowTopK: Bool) throws(RequestProblem) -> ServeRequest {
        guard !body.isEmpty else { throw .bad("body: empty; send {\"inputs\": \"text\"} or {\"inputs\": [\"a\", \"b\"]}") }
        let value: Any
        do { value = try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) } catch {
            throw .bad("body: not valid JSON (\(Self.reason(error)))")
        }
        guard let object = value as? [String: Any] else { throw .bad("body: expected a JSON object with \"inputs\"") }
        for key in object.keys.sorted() where !["inputs", "parameters", "options"].contains(key) {
            throw .bad("\(Self.field(key)): unknown field (expected inputs, parameters, options)")
        }
        var request = ServeRequest(texts: [], single: false, topK: nil)
        switch object["inputs"] {
        case nil, is NSNull:
            throw .bad("inputs: missing")
        case let text as String:
            request.texts = [text]
            request.single = true
        case let array as [Any]:
            guard !array.isEmpty else { throw .bad("inputs: empty array; give at least one text") }
            guard array.count <= limits.maxInputs else {
                throw .tooLarge("inputs: \(array.count) texts; at most \(limits.maxInputs) per request")
            }
            request.texts.reserveCapacity(array.count)
            for (i, element) in array.enumerated() {
                guard let text = element as? String else { throw .bad("inputs[\(i)]: expected a string") }
                request.texts.append(text)
            }
        default:
            throw .bad("inputs: expected a string or an array of strings")
        }
        for (i, text) in request.texts.enumerated() where text.utf8.count > limits.maxTextBytes {
            throw .tooLarge("\(request.single ? "inputs" : "inputs[\(i)]"): \(text.utf8.count) bytes; at most \(limits.maxTextBytes) per text")
        }
        if let parameters = object["parameters"], !(parameters is NSNull) {
            guard let p = parameters as? [String: Any] else { throw .bad("parameters: expected an object") }
            for key in p.keys.sorted() where !(allowTopK && key == "top_k") {
                throw .bad("parameters.\(Self.field(key)): unknown parameter\(allowTopK ? " (only top_k)" : " (this endpoint takes none)")")
            }
            if let k = p["top_k"], !(k is NSNull) {
                guard let n = k as? NSNumber, String(cString: n.objCType) != "c", n.doubleValue == n.doubleValue.rounded(),
                      n.doubleValue >= 1, n.doubleValue <= 1e6 else {
                    throw .bad("parameters.top_k: expected a positive integer")
                }
                request.topK = n.intValue
            }
        }
        if let options = object["options"], !(options is NSNull), !(options is [String: Any]) {
            throw .bad("options: expected an object")
        }
        return request
    }

    /// A key as it goes into an error message: at most 40 characters, control characters escaped.
    static func field(_ key: String) -> String {
        TerminalText.safe(key.count > 40 ? String(key.prefix(40)) + "…" : key)
    }

    /// The parser's complaint, at most 120 characters, control characters escaped.
    static func reason(_ error: Error) -> String {
        let ns = error as NSError
        if let detail = ns.userInfo[NSDebugDescriptionErrorKey] as? String { return TerminalText.safe(String(detail.prefix(120))) }
        return "unreadable"
    }
}
