import Foundation
import PandoEngine

/// A new global version as the bytes that differ from a version the school already holds.
///
/// Consecutive versions share their layout, so their `model.safetensors` files have the same
/// size and header; a round changes only the tensors it trained (never the frozen embedding
/// tables; with LoRA, only the targets and the head). The patch lists the differing byte
/// ranges of the new file, compared a 4-byte word at a time and merged across short gaps:
///
///     "PNDP" · format UInt16 = 1 · reserved UInt16 · target size UInt64 · range count UInt64
///     per range: offset UInt64 · length UInt32 · the new bytes            (little-endian)
///
/// It is lossless: applying it to the source file gives the new file exactly, and the school
/// accepts the result only if it hashes to the version id it was told, so a wrong or hostile
/// patch can cost a download, never a wrong model.
public enum VersionPatch {
    public static let magic: [UInt8] = Array("PNDP".utf8)
    public static let format: UInt16 = 1
    /// Unchanged words between two changed ones that are sent anyway rather than starting a
    /// new range (a range header is 12 bytes).
    static let mergeGapWords = 4

    /// Writes the patch from `source` to `target` at `patch`; returns its size, or nil when the
    /// files differ in size (another layout: no patch, the whole file is sent).
    @discardableResult
    public static func make(from source: URL, to target: URL, patch: URL) throws -> Int? {
        let old = try Data(contentsOf: source), new = try Data(contentsOf: target)
        guard old.count == new.count else { return nil }
        var ranges: [(offset: Int, length: Int)] = []
        old.withUnsafeBytes { (a: UnsafeRawBufferPointer) in
            new.withUnsafeBytes { (b: UnsafeRawBufferPointer) in
                let n = new.count
                var i = 0
                var open: (start: Int, end: Int)?
                while i < n {
                    let w = min(4, n - i)
                    if memcmp(a.baseAddress! + i, b.baseAddress! + i, w) != 0 {
                        if let o = open, i - o.end <= 4 * mergeGapWords { open = (o.start, i + w) } else {
                            if let o = open { ranges.append((o.start, o.end - o.start)) }
                            open = (i, i + w)
                        }
                    }
                    i += w
                }
                if let o = open { ranges.append((o.start, o.end - o.start)) }
            }
        }
        // A range longer than a UInt32 can say is sent as several.
        let limit = Int(UInt32.max) & ~3
        ranges = ranges.flatMap { r in
            stride(from: 0, to: r.length, by: limit).map { (r.offset + $0, min(limit, r.length - $0)) }
        }
        var out = Data()
        out.append(contentsOf: magic)
        append(format, to: &out)
        append(UInt16(0), to: &out)
        append(UInt64(new.count), to: &out)
        append(UInt64(ranges.count), to: &out)
        for r in ranges {
            append(UInt64(r.offset), to: &out)
            append(UInt32(r.length), to: &out)
            out.append(new[new.startIndex + r.offset ..< new.startIndex + r.offset + r.length])
        }
        try AtomicFile.write(to: patch, mode: 0o600) { try $0.write(out) }
        return out.count
    }

    /// Applies `patch` to `source` and writes the result to `destination` (atomically, 0600).
    /// Every range must lie inside the target, in ascending order, without overlap.
    public static func apply(_ patch: URL, to source: URL, writing destination: URL) throws {
        let p = try Data(contentsOf: patch)
        var file = try Data(contentsOf: source)
        func bad(_ why: String) -> Error { PatchError("version patch \(patch.lastPathComponent): \(why)") }
        var r = Reader(data: p)
        guard try r.bytes(4) == magic else { throw bad("not a Pando version patch (magic)") }
        guard try r.integer(UInt16.self) == format else { throw bad("format this build does not read") }
        _ = try r.integer(UInt16.self)
        let size = try r.integer(UInt64.self), count = try r.integer(UInt64.self)
        guard size == UInt64(file.count) else { throw bad("made for a \(size)-byte file, the held version has \(file.count)") }
        guard count <= UInt64(p.count / 12) else { throw bad("\(count) ranges in \(p.count) bytes") }
        var end = 0
        for _ in 0..<count {
            let offset = try r.integer(UInt64.self), length = Int(try r.integer(UInt32.self))
            guard offset >= UInt64(end), offset <= size, UInt64(length) <= size - offset else {
                throw bad("a range at \(offset) of \(length) bytes is out of order or outside the file")
            }
            let bytes = try r.bytes(length)
            file.replaceSubrange(Int(offset) ..< Int(offset) + length, with: bytes)
            end = Int(offset) + length
        }
        guard r.atEnd else { throw bad("trailing bytes") }
        try AtomicFile.write(to: destination, mode: 0o600) { try $0.write(file) }
    }

    public struct PatchError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    private static func append<T: FixedWidthInteger>(_ v: T, to d: inout Data) {
        withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) }
    }

    private struct Reader {
        let data: Data
        var offset = 0
        var atEnd: Bool { offset == data.count }
        mutating func bytes(_ n: Int) throws -> [UInt8] {
            guard n >= 0, data.count - offset >= n else { throw PatchError("version patch: truncated") }
            defer { offset += n }
            return Array(data[data.startIndex + offset ..< data.startIndex + offset + n])
        }
        mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
            let b = try bytes(MemoryLayout<T>.size)
            return b.reversed().reduce(T(0)) { $0 << 8 | T($1) }
        }
    }
}
