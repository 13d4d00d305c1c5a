import Foundation
import NIOCore

/// Frame and message encoding.
///
/// A frame is `length: UInt32 big-endian` followed by `length` bytes: one type byte
/// (``MessageType``) and the payload. Control payloads are UTF-8 JSON objects;
/// `objectChunk` payloads are binary (see the Protocol article).
public enum WireCodec {
    /// Bytes of the length prefix.
    public static let lengthPrefixSize = 4

    /// Appends one complete frame for `message` to `buffer`.
    public static func encode(_ message: WireMessage, into buffer: inout ByteBuffer, limits: WireLimits = .default) throws {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))  // patched below
        buffer.writeInteger(message.type.rawValue)
        switch message {
        case .objectChunk(let c):
            let id = Array(c.id.value.utf8)
            buffer.writeInteger(UInt8(id.count))
            buffer.writeBytes(id)
            buffer.writeInteger(c.offset)
            var data = c.data
            buffer.writeBuffer(&data)
        default:
            let json = try jsonEncoder.encode(AnyPayload(message))
            guard json.count <= limits.maxControlPayload else {
                throw WireError.limitExceeded("\(message.type.name) payload \(json.count) bytes exceeds \(limits.maxControlPayload)")
            }
            buffer.writeBytes(json)
        }
        let length = buffer.writerIndex - start - lengthPrefixSize
        guard length <= limits.maxFrameLength else {
            buffer.moveWriterIndex(to: start)
            throw WireError.frameTooLarge(length: length, max: limits.maxFrameLength)
        }
        buffer.setInteger(UInt32(length), at: start)
    }

    /// Convenience: a frame as a fresh buffer.
    public static func frame(_ message: WireMessage, limits: WireLimits = .default) throws -> ByteBuffer {
        var b = ByteBuffer()
        try encode(message, into: &b, limits: limits)
        return b
    }

    /// Removes one frame from the front of `buffer` and decodes it; `nil` when the frame
    /// is not complete yet (nothing consumed). Throws before buffering an oversize frame.
    public static func decodeFrame(from buffer: inout ByteBuffer, limits: WireLimits = .default) throws -> WireMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let len = Int(length)
        if len == 0 { throw WireError.emptyFrame }
        if len > limits.maxFrameLength { throw WireError.frameTooLarge(length: len, max: limits.maxFrameLength) }
        guard buffer.readableBytes >= lengthPrefixSize + len else { return nil }
        buffer.moveReaderIndex(forwardBy: lengthPrefixSize)
        let typeByte: UInt8 = buffer.readInteger()!
        let payload = buffer.readSlice(length: len - 1)!
        return try decodeMessage(type: typeByte, payload: payload, limits: limits)
    }

    /// Decodes one message body.
    public static func decodeMessage(type typeByte: UInt8, payload: ByteBuffer, limits: WireLimits = .default) throws -> WireMessage {
        guard let type = MessageType(rawValue: typeByte) else { throw WireError.unknownMessageType(typeByte) }
        var payload = payload
        let message: WireMessage
        if type == .objectChunk {
            func bad(_ d: String) -> WireError { .malformed(type: type.name, detail: d) }
            guard let idLen = payload.readInteger(as: UInt8.self), idLen > 0, Int(idLen) <= WireToken.maxLength else {
                throw bad("bad id length")
            }
            guard let idBytes = payload.readBytes(length: Int(idLen)) else { throw bad("truncated id") }
            guard let id = WireToken(String(decoding: idBytes, as: UTF8.self)) else { throw bad("id is not a token") }
            guard let offset = payload.readInteger(as: UInt64.self) else { throw bad("truncated offset") }
            message = .objectChunk(ObjectChunk(id: id, offset: offset, data: payload))
        } else {
            guard payload.readableBytes <= limits.maxControlPayload else {
                throw WireError.limitExceeded("\(type.name) payload \(payload.readableBytes) bytes exceeds \(limits.maxControlPayload)")
            }
            do {
                message = try decodeJSON(type, Data(payload.readableBytesView))
            } catch let e as WireError {
                throw e
            } catch {
                throw WireError.malformed(type: type.name, detail: Self.describe(error))
            }
        }
        try message.validate(limits: limits)
        return message
    }

    private static func decodeJSON(_ type: MessageType, _ data: Data) throws -> WireMessage {
        let d = jsonDecoder
        switch type {
        case .hello: return .hello(try d.decode(Hello.self, from: data))
        case .welcome: return .welcome(try d.decode(Welcome.self, from: data))
        case .reject: return .reject(try d.decode(Reject.self, from: data))
        case .heartbeat: return .heartbeat(try d.decode(Heartbeat.self, from: data))
        case .heartbeatAck: return .heartbeatAck(try d.decode(HeartbeatAck.self, from: data))
        case .goodbye: return .goodbye(try d.decode(Goodbye.self, from: data))
        case .objectOffer: return .objectOffer(try d.decode(ObjectOffer.self, from: data))
        case .objectRequest: return .objectRequest(try d.decode(ObjectRequest.self, from: data))
        case .objectComplete: return .objectComplete(try d.decode(ObjectComplete.self, from: data))
        case .objectReceipt: return .objectReceipt(try d.decode(ObjectReceipt.self, from: data))
        case .roundAssignment: return .roundAssignment(try d.decode(RoundAssignment.self, from: data))
        case .roundResult: return .roundResult(try d.decode(RoundResult.self, from: data))
        case .secAggKeys: return .secAggKeys(try d.decode(SecAggKeys.self, from: data))
        case .secAggKeyBundle: return .secAggKeyBundle(try d.decode(SecAggKeyBundleMessage.self, from: data))
        case .secAggShares: return .secAggShares(try d.decode(SecAggShares.self, from: data))
        case .secAggShareDelivery: return .secAggShareDelivery(try d.decode(SecAggShareDelivery.self, from: data))
        case .secAggUnmask: return .secAggUnmask(try d.decode(SecAggUnmask.self, from: data))
        case .secAggReveal: return .secAggReveal(try d.decode(SecAggReveal.self, from: data))
        case .objectChunk: throw WireError.malformed(type: type.name, detail: "binary")
        }
    }

    /// Describes a decoding failure using only the static schema: the field path is built
    /// from field names this protocol defines (dictionary keys and anything else the peer
    /// chose are shown as `<key>`), and no value or Foundation message (which may quote the
    /// offending value, e.g. "Cannot initialize X from invalid String value …") is included.
    /// These descriptions end up in the coordinator's log, which must never hold school text.
    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c):
            if c.codingPath.isEmpty { return "not a valid JSON object" }
            return "invalid value at \(path(c.codingPath))"
        case DecodingError.keyNotFound(let k, let c): return "missing field \(path(c.codingPath + [k]))"
        case DecodingError.typeMismatch(_, let c): return "wrong type at \(path(c.codingPath))"
        case DecodingError.valueNotFound(_, let c): return "null at \(path(c.codingPath))"
        default: return "invalid JSON"
        }
    }

    /// Every field name of every JSON payload in protocol version 1 (the static schema).
    /// Keys outside it are peer-chosen (dictionary keys) and are never echoed.
    static let schemaFieldNames: Set<String> = [
        "protocolVersion", "softwareVersion", "capabilities", "schoolID", "heartbeatIntervalMillis",
        "idleTimeoutMillis", "maxFrameLength", "code", "reason", "supportedProtocolVersions", "sequence",
        "activity", "progress", "id", "kind", "size", "sha256", "offset", "status", "round", "model",
        "parameters", "update", "exampleCount", "metrics", "task", "nonce", "auditHead", "hash",
        "lineage", "chain", "version", "parent", "initSeed", "declineReason",
        "secureAggregation", "roster", "threshold", "minimumSurvivors", "neighbours", "roundSeed", "clip", "scale",
        "maxWeight", "vectorLength", "maskedWith", "encryptionKey", "maskingKey", "keys", "school", "envelopes", "peer",
        "sealed", "survivors", "dropped", "shares", "owner", "index", "values", "patch", "base", "object",
    ]

    static func path(_ keys: [CodingKey]) -> String {
        if keys.isEmpty { return "top level" }
        return keys.prefix(8).map { k -> String in
            if let i = k.intValue, i >= 0 { return String(i) }  // array index (a number, never text)
            return schemaFieldNames.contains(k.stringValue) ? k.stringValue : "<key>"
        }.joined(separator: ".")
    }

    private static var jsonEncoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }

    private static var jsonDecoder: JSONDecoder { JSONDecoder() }

    private struct AnyPayload: Encodable {
        let message: WireMessage
        init(_ m: WireMessage) { message = m }
        func encode(to encoder: Encoder) throws {
            switch message {
            case .hello(let v): try v.encode(to: encoder)
            case .welcome(let v): try v.encode(to: encoder)
            case .reject(let v): try v.encode(to: encoder)
            case .heartbeat(let v): try v.encode(to: encoder)
            case .heartbeatAck(let v): try v.encode(to: encoder)
            case .goodbye(let v): try v.encode(to: encoder)
            case .objectOffer(let v): try v.encode(to: encoder)
            case .objectRequest(let v): try v.encode(to: encoder)
            case .objectComplete(let v): try v.encode(to: encoder)
            case .objectReceipt(let v): try v.encode(to: encoder)
            case .roundAssignment(let v): try v.encode(to: encoder)
            case .roundResult(let v): try v.encode(to: encoder)
            case .secAggKeys(let v): try v.encode(to: encoder)
            case .secAggKeyBundle(let v): try v.encode(to: encoder)
            case .secAggShares(let v): try v.encode(to: encoder)
            case .secAggShareDelivery(let v): try v.encode(to: encoder)
            case .secAggUnmask(let v): try v.encode(to: encoder)
            case .secAggReveal(let v): try v.encode(to: encoder)
            case .objectChunk: preconditionFailure("chunks are binary")
            }
        }
    }
}

/// `ByteToMessageDecoder` for frames: typed errors, never buffers more than one maximal frame.
public struct WireFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = WireMessage
    public let limits: WireLimits
    public init(limits: WireLimits = .default) { self.limits = limits }

    public mutating func decode(buffer: inout ByteBuffer) throws -> WireMessage? {
        try WireCodec.decodeFrame(from: &buffer, limits: limits)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> WireMessage? {
        if let m = try decode(buffer: &buffer) { return m }
        if buffer.readableBytes > 0 { throw WireError.truncatedFrame(buffered: buffer.readableBytes) }
        return nil
    }
}

/// `MessageToByteEncoder` for frames.
public struct WireFrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = WireMessage
    public let limits: WireLimits
    public init(limits: WireLimits = .default) { self.limits = limits }
    public func encode(data: WireMessage, out: inout ByteBuffer) throws {
        try WireCodec.encode(data, into: &out, limits: limits)
    }
}

/// Handshake rules shared by both ends.
public enum Handshake {
    /// Coordinator side: accept `hello` from school `schoolID`, or say why not.
    public static func evaluate(_ hello: Hello, schoolID: WireToken, softwareVersion: WireToken,
                                supportedVersions: [UInt16] = [PandoProtocol.version],
                                heartbeatIntervalMillis: UInt32, idleTimeoutMillis: UInt32,
                                limits: WireLimits = .default) -> Result<Welcome, Reject> {
        guard supportedVersions.contains(hello.protocolVersion) else {
            return .failure(Reject(
                code: .protocolVersionMismatch,
                reason: "client speaks Pando protocol \(hello.protocolVersion) (software \(hello.softwareVersion)); this coordinator speaks \(supportedVersions.map(String.init).joined(separator: ", ")) (software \(softwareVersion)). Upgrade the older side.",
                supportedProtocolVersions: supportedVersions))
        }
        let common = PandoProtocol.capabilities.filter { hello.capabilities.contains($0) }
        return .success(Welcome(protocolVersion: hello.protocolVersion, softwareVersion: softwareVersion, capabilities: common,
                                schoolID: schoolID, heartbeatIntervalMillis: heartbeatIntervalMillis,
                                idleTimeoutMillis: idleTimeoutMillis, maxFrameLength: UInt32(clamping: limits.maxFrameLength)))
    }
}
