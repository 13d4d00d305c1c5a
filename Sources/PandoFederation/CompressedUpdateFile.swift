import Foundation
import PandoEngine

/// A compressed update as it travels and rests on disk (format 1; format 0 is the plain
/// Float32 file of ``UpdateFile``, which `compression: none` still sends). Little-endian:
///
/// ```
/// "PNDU"  u16 format = 1  u16 header bytes H
/// header: u8 transform count, then per transform: u8 name length, name (ASCII),
///         u8 parameter count, per parameter: u8 key length, key, f64 value;
///         u32 tensors sent, u64 values sent
/// body (after 8 + H bytes), by the compression transform:
///   float16    each sent tensor in layout order, u16 halves
///   int8-rows  each sent tensor: 2-D: f32 scale per row (shape[0] rows), then i8 per value;
///              1-D: u16 halves
///   topk       u64 k, k × u32 indices into the sent values (strictly increasing), k × f32
/// ```
///
/// A file from a peer is hostile: the coordinator first checks its size against the exact
/// size the round's pipeline makes (``UpdatePipeline/encodedBytes``), then that the header
/// names exactly the round's transforms, tensor and value counts, and while decoding that
/// every scale and value is finite and every index in range and increasing. Each refusal
/// is an ``UpdateDecodingError`` naming the field. The decoded values then go through
/// ``UpdateValidator`` like any update.
public enum CompressedUpdateFile {
    public static let magic: [UInt8] = Array("PNDU".utf8)
    public static let formatVersion: UInt16 = 1
    /// The largest header a reader accepts.
    public static let maxHeaderBytes = 4096

    /// What encoding made, and for top-k the school's new residual (the values not sent).
    public struct Encoded {
        public var bytes: [UInt8]
        /// Top-k only: `delta + previous residual` with the sent values set to zero, one value per trained value.
        public var residual: [Float]?
    }

    static func headerBytes(_ transforms: [UpdateTransform]) -> Int { 8 + transformBytes(transforms).count + 12 }

    static func transformBytes(_ transforms: [UpdateTransform]) -> [UInt8] {
        var out: [UInt8] = [UInt8(transforms.count)]
        for t in transforms {
            out.append(UInt8(t.name.utf8.count))
            out += Array(t.name.utf8)
            out.append(UInt8(t.parameters.count))
            for key in t.parameters.keys.sorted() {
                out.append(UInt8(key.utf8.count))
                out += Array(key.utf8)
                withUnsafeBytes(of: t.parameters[key]!.bitPattern.littleEndian) { out += $0 }
            }
        }
        return out
    }

    /// Encodes the pipeline's tensors of `delta` (which must not be `.none`). For top-k,
    /// `residual` (the school's values left over from earlier rounds, one per trained value,
    /// or nil) is added to the delta first; what is not sent comes back as the new residual.
    /// A non-finite value, or one beyond float16's range where halves are sent, is an error:
    /// the school sends nothing rather than an update that would be refused.
    public static func encode(_ delta: ParameterBuffer, pipeline: UpdatePipeline, residual: [Float]? = nil) throws -> Encoded {
        precondition(pipeline.compression != .none, "compression none is the plain UpdateFile")
        let selection = pipeline.selection
        precondition(residual == nil || residual!.count == selection.trainedCount, "residual of another size")
        let headerEnd = headerBytes(pipeline.transforms)
        var bytes = [UInt8](repeating: 0, count: pipeline.encodedBytes)
        var newResidual: [Float]?
        try withExtendedLifetime(delta) {
            try bytes.withUnsafeMutableBytes { out in
                let raw = out.baseAddress!
                var o = 0
                func put<T: FixedWidthInteger>(_ v: T) { raw.storeBytes(of: v.littleEndian, toByteOffset: o, as: T.self); o += MemoryLayout<T>.size }
                for b in magic { put(b) }
                put(formatVersion)
                put(UInt16(headerEnd - 8))
                for b in transformBytes(pipeline.transforms) { put(b) }
                put(UInt32(selection.trained.count))
                put(UInt64(selection.trainedCount))
                func half(_ x: Float, _ spec: TensorSpec, _ i: Int) throws -> UInt16 {
                    let h = Float16(x)
                    guard h.isFinite else { throw UpdateDecodingError(field: "\(spec.name)[\(i)]", reason: "value \(x) cannot be sent as float16") }
                    return h.bitPattern
                }
                switch pipeline.compression {
                case .none: break
                case .float16:
                    for spec in selection.trained {
                        let v = delta.buffer.base + spec.offset
                        for i in 0..<spec.count { put(try half(v[i], spec, i)) }
                    }
                case .int8:
                    for spec in selection.trained {
                        let v = delta.buffer.base + spec.offset
                        guard spec.shape.count >= 2 else {
                            for i in 0..<spec.count { put(try half(v[i], spec, i)) }
                            continue
                        }
                        let rows = spec.shape[0], cols = spec.count / rows
                        let scalesAt = o
                        o += 4 * rows
                        for r in 0..<rows {
                            let row = v + r * cols
                            var largest: Float = 0
                            for j in 0..<cols {
                                guard row[j].isFinite else { throw UpdateDecodingError(field: "\(spec.name)[\(r * cols + j)]", reason: "value is not finite") }
                                largest = max(largest, abs(row[j]))
                            }
                            let scale = largest / 127
                            raw.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: scalesAt + 4 * r, as: UInt32.self)
                            for j in 0..<cols {
                                let q = scale > 0 ? max(-127, min(127, (row[j] / scale).rounded())) : 0
                                put(Int8(q))
                            }
                        }
                    }
                case .topK:
                    // The trained values side by side, plus what earlier rounds left over.
                    var values = [Float](repeating: 0, count: selection.trainedCount)
                    var at = 0
                    for spec in selection.trained {
                        values.withUnsafeMutableBufferPointer { dst in
                            (dst.baseAddress! + at).update(from: delta.buffer.base + spec.offset, count: spec.count)
                        }
                        at += spec.count
                    }
                    if let residual { for i in 0..<values.count { values[i] += residual[i] } }
                    if let bad = values.firstIndex(where: { !$0.isFinite }) {
                        throw UpdateDecodingError(field: "value \(bad)", reason: "the delta (with its residual) is not finite")
                    }
                    let k = pipeline.topKCount!
                    let chosen = values.withUnsafeBufferPointer { TopK.indices($0.baseAddress!, count: $0.count, k: k) }
                    put(UInt64(k))
                    for i in chosen { put(i) }
                    for i in chosen {
                        put(values[Int(i)].bitPattern)
                        values[Int(i)] = 0
                    }
                    newResidual = values
                }
            }
        }
        return Encoded(bytes: bytes, residual: newResidual)
    }

    /// Writes `encoded` to `url` atomically (temp file, fsync, rename), mode 0600.
    public static func write(_ encoded: Encoded, to url: URL) throws {
        try AtomicFile.write(to: url, mode: 0o600) { writer in
            try encoded.bytes.withUnsafeBytes { try writer.write($0) }
        }
    }

    /// Reads an update file made by `pipeline` into `delta` (zero in every tensor or value
    /// not sent). The size is checked before anything is read.
    public static func read(_ url: URL, pipeline: UpdatePipeline, into delta: ParameterBuffer) throws {
        let expected = pipeline.encodedBytes
        let fd = try UpdateFile.openChecked(url, bytes: expected, what: "\(pipeline.compression) of \(pipeline.selection.trainedCount) trained values")
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: expected)
        try bytes.withUnsafeMutableBytes { try UpdateFile.readFully(fd, into: $0.baseAddress!, bytes: expected, at: 0, path: url.path) }
        do {
            try bytes.withUnsafeBytes { try decode($0, pipeline: pipeline, into: delta) }
        } catch let e as UpdateDecodingError {
            throw UpdateFileError(path: url.path, reason: e.description)
        }
    }

    /// Decodes `bytes` (a whole update file) into `delta`, checking every field against
    /// `pipeline`; `delta` holds partial values if this throws.
    public static func decode(_ bytes: UnsafeRawBufferPointer, pipeline: UpdatePipeline, into delta: ParameterBuffer) throws {
        let selection = pipeline.selection
        precondition(delta.layout.tensors.count >= selection.trained.count, "delta of another layout")
        var reader = Reader(bytes: bytes)
        let m = try reader.take(4, "magic")
        guard Array(m) == magic else { throw UpdateDecodingError(field: "magic", reason: "not a Pando compressed update (\(Array(m)))") }
        let version: UInt16 = try reader.int("format")
        guard version == formatVersion else {
            throw UpdateDecodingError(field: "format", reason: "version \(version); this coordinator reads version \(formatVersion)")
        }
        let headerLength = Int(try reader.int("header length") as UInt16)
        guard headerLength <= maxHeaderBytes, 8 + headerLength <= bytes.count else {
            throw UpdateDecodingError(field: "header length", reason: "\(headerLength) bytes (at most \(maxHeaderBytes), within a file of \(bytes.count))")
        }
        // The header: exactly the round's transforms.
        let transformCount = Int(try reader.int("transforms") as UInt8)
        guard transformCount <= 16 else { throw UpdateDecodingError(field: "transforms", reason: "\(transformCount) transforms (at most 16)") }
        var transforms: [UpdateTransform] = []
        for t in 0..<transformCount {
            let name = try reader.name("transform \(t) name")
            let parameterCount = Int(try reader.int("transform \(name) parameters") as UInt8)
            guard parameterCount <= 16 else { throw UpdateDecodingError(field: "transform \(name) parameters", reason: "\(parameterCount) (at most 16)") }
            var parameters: [String: Double] = [:]
            for _ in 0..<parameterCount {
                let key = try reader.name("transform \(name) parameter name")
                let value = Double(bitPattern: try reader.int("transform \(name).\(key)"))
                guard value.isFinite else { throw UpdateDecodingError(field: "transform \(name).\(key)", reason: "not finite") }
                parameters[key] = value
            }
            transforms.append(UpdateTransform(name, parameters))
        }
        guard transforms == pipeline.transforms else {
            throw UpdateDecodingError(field: "transforms", reason: "the update says \(transforms.map(\.description).joined(separator: " → ")); the round's plan is \(pipeline.transforms.map(\.description).joined(separator: " → "))")
        }
        let tensors = Int(try reader.int("tensors") as UInt32)
        guard tensors == selection.trained.count else {
            throw UpdateDecodingError(field: "tensors", reason: "\(tensors) tensors sent; the round trains \(selection.trained.count)")
        }
        let values = try reader.int("values") as UInt64
        guard values == UInt64(selection.trainedCount) else {
            throw UpdateDecodingError(field: "values", reason: "\(values) values sent; the round trains \(selection.trainedCount)")
        }
        guard reader.offset == 8 + headerLength else {
            throw UpdateDecodingError(field: "header length", reason: "\(headerLength) bytes, but the header's fields take \(reader.offset - 8)")
        }
        let expectedBody = pipeline.bodyBytes
        guard bytes.count - reader.offset == expectedBody else {
            throw UpdateDecodingError(field: "body", reason: "\(bytes.count - reader.offset) bytes; \(pipeline.compression) of these tensors takes \(expectedBody)")
        }
        try withExtendedLifetime(delta) {
            for spec in delta.layout.tensors where selection.frozen.contains(spec.name) { delta.view(spec).fill(0) }
            func halves(_ spec: TensorSpec) throws {
                let v = delta.buffer.base + spec.offset
                for i in 0..<spec.count {
                    let h = Float16(bitPattern: reader.unchecked(UInt16.self))
                    guard h.isFinite else { throw UpdateDecodingError(field: "\(spec.name)[\(i)]", reason: "float16 value is not finite") }
                    v[i] = Float(h)
                }
            }
            switch pipeline.compression {
            case .none: break
            case .float16:
                for spec in selection.trained { try halves(spec) }
            case .int8:
                for spec in selection.trained {
                    guard spec.shape.count >= 2 else { try halves(spec); continue }
                    let rows = spec.shape[0], cols = spec.count / rows
                    let scalesAt = reader.offset
                    reader.offset += 4 * rows
                    let v = delta.buffer.base + spec.offset
                    for r in 0..<rows {
                        let scale = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: scalesAt + 4 * r, as: UInt32.self)))
                        guard scale.isFinite, scale >= 0 else {
                            throw UpdateDecodingError(field: "\(spec.name) scale[\(r)]", reason: "int8 row scale \(scale) is not a finite number ≥ 0")
                        }
                        let row = v + r * cols
                        for j in 0..<cols { row[j] = Float(reader.unchecked(Int8.self)) * scale }
                    }
                }
            case .topK:
                let k = reader.unchecked(UInt64.self)
                guard k == UInt64(pipeline.topKCount!) else {
                    throw UpdateDecodingError(field: "topk.k", reason: "\(k) values; the round's density sends \(pipeline.topKCount!)")
                }
                for spec in selection.trained { delta.view(spec).fill(0) }
                let indicesAt = reader.offset, valuesAt = indicesAt + 4 * Int(k)
                // Sent positions map to layout offsets tensor by tensor; indices only increase.
                var tensor = 0, start = 0
                var previous: Int = -1
                for p in 0..<Int(k) {
                    let index = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: indicesAt + 4 * p, as: UInt32.self)))
                    guard index > previous else {
                        throw UpdateDecodingError(field: "topk.indices[\(p)]", reason: "\(index) does not follow \(previous) (indices must be strictly increasing)")
                    }
                    guard index < selection.trainedCount else {
                        throw UpdateDecodingError(field: "topk.indices[\(p)]", reason: "\(index) is outside the \(selection.trainedCount) trained values")
                    }
                    let value = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: valuesAt + 4 * p, as: UInt32.self)))
                    guard value.isFinite else { throw UpdateDecodingError(field: "topk.values[\(p)]", reason: "\(value) is not finite") }
                    while index >= start + selection.trained[tensor].count {
                        start += selection.trained[tensor].count
                        tensor += 1
                    }
                    delta.buffer.base[selection.trained[tensor].offset + index - start] = value
                    previous = index
                }
            }
        }
    }

    /// Bounds-checked little-endian reads over a hostile buffer.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        mutating func take(_ n: Int, _ field: String) throws -> UnsafeRawBufferPointer.SubSequence {
            guard n >= 0, offset + n <= bytes.count else { throw UpdateDecodingError(field: field, reason: "the file ends at byte \(bytes.count)") }
            defer { offset += n }
            return bytes[offset..<offset + n]
        }

        mutating func int<T: FixedWidthInteger>(_ field: String) throws -> T {
            guard offset + MemoryLayout<T>.size <= bytes.count else { throw UpdateDecodingError(field: field, reason: "the file ends at byte \(bytes.count)") }
            return unchecked(T.self)
        }

        /// A read the caller has bounded (the body's size is checked once, up front).
        mutating func unchecked<T: FixedWidthInteger>(_: T.Type) -> T {
            defer { offset += MemoryLayout<T>.size }
            return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }

        /// A length-prefixed name: 1–32 bytes of lowercase ASCII letters, digits, `-` or camelCase letters.
        mutating func name(_ field: String) throws -> String {
            let n = Int(try int(field) as UInt8)
            let raw = try take(n, field)
            guard (1...32).contains(n), raw.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }) else {
                throw UpdateDecodingError(field: field, reason: "not a name of 1–32 ASCII letters, digits or '-'")
            }
            return String(decoding: raw, as: UTF8.self)
        }
    }
}

/// Why an update file was refused, naming the field (`topk.indices[17]`, `transforms`, a
/// tensor's `scale[3]`); never any of the file's values beyond the offending one.
public struct UpdateDecodingError: Error, CustomStringConvertible, Equatable {
    public let field: String
    public let reason: String
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }
    public var description: String { "\(field): \(reason)" }
}

extension UpdatePipeline {
    /// Reads an update file this pipeline made (either format) into `delta`, zero wherever
    /// nothing was sent; a file of another size or with a field out of order is an error naming it.
    public func read(_ url: URL, into delta: ParameterBuffer) throws {
        if compression == .none {
            try UpdateFile.read(url, into: delta, selection: selection)
        } else {
            try CompressedUpdateFile.read(url, pipeline: self, into: delta)
        }
    }
}
