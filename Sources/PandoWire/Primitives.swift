import Crypto
import Foundation

/// An identifier on the wire: 1–64 bytes of `A–Z a–z 0–9 . _ : -`, starting with a
/// letter or digit. It cannot hold spaces, punctuation or non-ASCII, so it cannot
/// carry sentences of training text. Every name-like field on the wire is a token.
public struct WireToken: Sendable, Hashable, Comparable, Codable, CodingKeyRepresentable,
    CustomStringConvertible, ExpressibleByStringLiteral
{
    public static let maxLength = 64
    public let value: String

    /// Validates `value`; `nil` if it is not a token.
    public init?(_ value: String) {
        guard Self.isValid(value) else { return nil }
        self.value = value
    }

    /// For literals in code; traps on an invalid literal (a programmer error).
    public init(stringLiteral value: String) {
        precondition(Self.isValid(value), "invalid WireToken literal \(value.debugDescription)")
        self.value = value
    }

    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        guard (1...maxLength).contains(u.count) else { return false }
        for (i, b) in u.enumerated() {
            let alnum = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
            if alnum { continue }
            if i > 0 && (b == 0x2E || b == 0x5F || b == 0x3A || b == 0x2D) { continue }
            return false
        }
        return true
    }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard Self.isValid(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a token"))
        }
        value = s
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }

    public var codingKey: CodingKey { Key(stringValue: value) }
    public init?<T: CodingKey>(codingKey: T) { self.init(codingKey.stringValue) }
    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public var description: String { value }
    public static func < (a: WireToken, b: WireToken) -> Bool { a.value < b.value }
}

/// A SHA-256 digest (32 bytes; lower-case hex in JSON).
public struct ObjectDigest: Sendable, Hashable, Codable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    public init(_ digest: SHA256.Digest) { bytes = Array(digest) }

    public init?(hex: String) {
        let u = Array(hex.utf8)
        guard u.count == 64 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(32)
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        for i in stride(from: 0, to: 64, by: 2) {
            guard let h = nib(u[i]), let l = nib(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
        }
        bytes = out
    }

    public static func of<D: DataProtocol>(_ data: D) -> ObjectDigest { ObjectDigest(SHA256.hash(data: data)) }

    public var hex: String { bytes.map { String(format: "%02x", $0) }.joined() }
    public var description: String { hex }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let d = ObjectDigest(hex: s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a lower-case hex SHA-256"))
        }
        self = d
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(hex)
    }
}

/// Size limits every decoder enforces before allocating.
public struct WireLimits: Sendable, Equatable {
    /// Largest accepted frame length field (type byte + payload).
    public var maxFrameLength: Int
    /// Largest accepted JSON control payload.
    public var maxControlPayload: Int
    /// Largest data chunk a sender emits (must fit in `maxFrameLength` with the chunk header).
    public var chunkSize: Int
    /// Longest an object transfer may go without progress (a chunk, or the other side taking
    /// one): then the connection is closed. Heartbeats keep a connection alive, not a transfer.
    public var transferStallSeconds: Double

    public init(maxFrameLength: Int = 1 << 20, maxControlPayload: Int = 64 << 10, chunkSize: Int = 256 << 10,
                transferStallSeconds: Double = 60) {
        self.maxFrameLength = maxFrameLength
        self.maxControlPayload = maxControlPayload
        self.chunkSize = chunkSize
        self.transferStallSeconds = transferStallSeconds
    }

    public static let `default` = WireLimits()
}

/// Typed decode/protocol errors. None of them traps; each closes only the offending connection.
public enum WireError: Error, Equatable, CustomStringConvertible {
    case frameTooLarge(length: Int, max: Int)
    case emptyFrame
    case truncatedFrame(buffered: Int)
    case unknownMessageType(UInt8)
    case malformed(type: String, detail: String)
    case wrongDirection(type: String)
    case limitExceeded(String)

    public var description: String {
        switch self {
        case .frameTooLarge(let l, let m): return "frame length \(l) exceeds the maximum \(m)"
        case .emptyFrame: return "frame length 0 (a frame holds at least its type byte)"
        case .truncatedFrame(let n): return "connection ended inside a frame (\(n) bytes buffered)"
        case .unknownMessageType(let t): return String(format: "unknown message type 0x%02x", t)
        case .malformed(let t, let d): return "malformed \(Self.capped(t)) message: \(Self.capped(d))"
        case .wrongDirection(let t): return "\(t) is not allowed in this direction"
        case .limitExceeded(let what): return Self.capped(what)
        }
    }

    /// Longest detail a description carries (defence in depth: details are built from the
    /// static schema, but a description must never grow with peer input).
    public static let maxDetailLength = 200

    static func capped(_ s: String) -> String {
        s.utf8.count <= maxDetailLength ? s : String(decoding: s.utf8.prefix(maxDetailLength), as: UTF8.self) + "…"
    }
}
