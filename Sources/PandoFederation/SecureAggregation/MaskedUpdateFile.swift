import Foundation
import PandoEngine

/// The file a school uploads under secure aggregation: its masked, fixed-point update.
///
///     "PNDM" · format UInt16 = 1 · reserved UInt16 = 0 · round UInt64 · words UInt64   (24 bytes, little-endian)
///     words × UInt32 little-endian: the masked encoding, L values then the weight
///
/// The size is fixed by the round (24 + 4·(L + 1)), so the coordinator knows exactly what to
/// accept before a byte arrives; nothing in it can be read without the other schools' masks.
public enum MaskedUpdateFile {
    public static let magic: [UInt8] = Array("PNDM".utf8)
    public static let format: UInt16 = 1
    public static let headerBytes = 24

    public static func size(words: Int) -> Int { headerBytes + 4 * words }

    /// Writes `masked` for `round` atomically (0600).
    public static func write(_ masked: [UInt32], round: Int, to url: URL) throws {
        var header = [UInt8]()
        header += magic
        append(format, to: &header)
        append(UInt16(0), to: &header)
        append(UInt64(round), to: &header)
        append(UInt64(masked.count), to: &header)
        try AtomicFile.write(to: url, mode: 0o600) { writer in
            try writer.write(Data(header))
            #if _endian(little)
            try masked.withUnsafeBytes { try writer.write($0) }
            #else
            var bytes = [UInt8]()
            for w in masked { append(w, to: &bytes) }
            try bytes.withUnsafeBytes { try writer.write($0) }
            #endif
        }
    }

    /// Reads a masked update of `round` with exactly `words` words into `destination`
    /// (reused across schools: the coordinator's one scratch vector).
    public static func read(_ url: URL, round: Int, words: Int, into destination: inout [UInt32]) throws {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        let header = try handle.read(upToCount: headerBytes) ?? Data()
        func bad(_ why: String) -> SecAggError { .malformed("masked update \(url.lastPathComponent): \(why)") }
        guard header.count == headerBytes, Array(header.prefix(4)) == magic else { throw bad("not a Pando masked update (magic)") }
        let h = Array(header)
        let version = UInt16(h[4]) | UInt16(h[5]) << 8
        guard version == format else { throw bad("format \(version), this build reads \(format)") }
        let fileRound = readUInt64(h, at: 8), count = readUInt64(h, at: 16)
        guard fileRound == UInt64(round) else { throw bad("made for round \(fileRound), not \(round)") }
        guard count == UInt64(words) else { throw bad("\(count) words, the round expects \(words)") }
        if destination.count != words { destination = [UInt32](repeating: 0, count: words) }
        // Straight into the destination, a megabyte at a time: no second copy of the update.
        var filled = 0
        let total = 4 * words
        try destination.withUnsafeMutableBytes { d in
            while filled < total {
                guard let chunk = try handle.read(upToCount: min(1 << 20, total - filled)), !chunk.isEmpty else { break }
                chunk.withUnsafeBytes { (d.baseAddress! + filled).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                filled += chunk.count
            }
        }
        guard filled == total, (try handle.read(upToCount: 1) ?? Data()).isEmpty else {
            throw bad("the payload is not the \(total) bytes the round expects")
        }
        #if !_endian(little)
        for i in destination.indices { destination[i] = UInt32(littleEndian: destination[i]) }
        #endif
    }

    private static func append<T: FixedWidthInteger>(_ v: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }

    private static func readUInt64(_ b: [UInt8], at o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }
}
