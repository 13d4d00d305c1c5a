import Foundation

/// Big-endian, length-prefixed byte building for transcripts and share plaintexts.
struct SecAggByteWriter {
    var bytes: [UInt8] = []

    mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func append(raw: [UInt8]) { bytes.append(contentsOf: raw) }
    /// UInt32 length then the bytes, so concatenations are unambiguous.
    mutating func append(lengthPrefixed raw: [UInt8]) {
        append(UInt32(raw.count))
        bytes.append(contentsOf: raw)
    }
    mutating func append(string: String) { append(lengthPrefixed: Array(string.utf8)) }
}

/// The reading side of `SecAggByteWriter`; throws `Truncated` on short input.
struct SecAggByteReader {
    struct Truncated: Error {}
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let n = MemoryLayout<T>.size
        guard bytes.count - offset >= n else { throw Truncated() }
        var v: T = 0
        for b in bytes[offset..<(offset + n)] { v = (v << 8) | T(b) }
        offset += n
        return v
    }
    mutating func readUInt16() throws -> UInt16 { try read(UInt16.self) }
    mutating func readUInt32() throws -> UInt32 { try read(UInt32.self) }
    mutating func readUInt64() throws -> UInt64 { try read(UInt64.self) }
    mutating func readLengthPrefixed(max: Int = 1 << 20) throws -> [UInt8] {
        let n = Int(try readUInt32())
        guard n <= max, bytes.count - offset >= n else { throw Truncated() }
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }
    func expectEnd() throws { guard offset == bytes.count else { throw Truncated() } }
}
