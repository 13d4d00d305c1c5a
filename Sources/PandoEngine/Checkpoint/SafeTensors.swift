import Foundation

/// Reading and writing the safetensors format: an 8-byte little-endian
/// header length, a JSON header mapping tensor names to dtype, shape and byte
/// range, then the raw little-endian tensor bytes.
public enum SafeTensors {
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64", i64 = "I64", i32 = "I32", i8 = "I8"
        var size: Int {
            switch self {
            case .i8: 1
            case .f16, .bf16: 2
            case .f32, .i32: 4
            case .f64, .i64: 8
            }
        }
    }

    public struct FormatError: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// One tensor's entry in the header.
    public struct Entry: Sendable {
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data section.
        public let range: Range<Int>
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// A safetensors file mapped into memory.
    public struct File: @unchecked Sendable {
        public let path: String
        public let entries: [String: Entry]
        public let metadata: [String: String]
        let data: Data
        let dataStart: Int

        /// Opens and validates the header (sizes, offsets, dtypes).
        public init(url: URL) throws {
            path = url.path
            let data: Data
            do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
                throw FormatError(path: url.path, reason: "cannot read: \(error.localizedDescription)")
            }
            guard data.count >= 8 else { throw FormatError(path: path, reason: "file is \(data.count) bytes, too short for a header") }
            let headerLength = data.withUnsafeBytes { raw in Int(UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))) }
            guard headerLength > 0, headerLength <= data.count - 8, headerLength < 100 << 20 else {
                throw FormatError(path: path, reason: "header length \(headerLength) does not fit a \(data.count)-byte file")
            }
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) } catch {
                throw FormatError(path: path, reason: "header is not valid JSON")
            }
            guard let header = object as? [String: Any] else { throw FormatError(path: path, reason: "header is not a JSON object") }
            let dataSize = data.count - 8 - headerLength
            var entries = [String: Entry]()
            var metadata = [String: String]()
            for (name, value) in header {
                if name == "__metadata__" {
                    metadata = (value as? [String: String]) ?? [:]
                    continue
                }
                guard let spec = value as? [String: Any],
                      let dtypeName = spec["dtype"] as? String,
                      let shape = spec["shape"] as? [Int],
                      let offsets = spec["data_offsets"] as? [Int], offsets.count == 2
                else { throw FormatError(path: path, reason: "tensor '\(name)': malformed header entry") }
                guard let dtype = DType(rawValue: dtypeName) else {
                    throw FormatError(path: path, reason: "tensor '\(name)': unsupported dtype \(dtypeName)")
                }
                let entry = Entry(dtype: dtype, shape: shape, range: offsets[0]..<max(offsets[0], offsets[1]))
                guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[1] <= dataSize,
                      offsets[1] - offsets[0] == entry.elementCount * dtype.size
                else {
                    throw FormatError(path: path, reason: "tensor '\(name)': byte range \(offsets) does not match shape \(shape) of \(dtypeName) within \(dataSize) data bytes")
                }
                entries[name] = entry
            }
            self.entries = entries
            self.metadata = metadata
            self.data = data
            self.dataStart = 8 + headerLength
        }

        /// Converts tensor `name` to Float32 into `destination`, which must
        /// hold exactly its element count.
        public func read(_ name: String, into destination: FloatBuffer) throws {
            guard let entry = entries[name] else { throw FormatError(path: path, reason: "no tensor named '\(name)'") }
            guard entry.elementCount == destination.count else {
                throw FormatError(path: path, reason: "tensor '\(name)' has \(entry.elementCount) elements, expected \(destination.count)")
            }
            data.withUnsafeBytes { raw in
                let src = raw.baseAddress! + dataStart + entry.range.lowerBound
                let out = destination.base
                let n = entry.elementCount
                switch entry.dtype {
                case .f32:
                    memcpy(out, src, n * 4)
                case .f16:
                    for i in 0..<n { out[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
                case .bf16:
                    for i in 0..<n { out[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
                case .f64:
                    for i in 0..<n { out[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
                case .i64:
                    for i in 0..<n { out[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
                case .i32:
                    for i in 0..<n { out[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
                case .i8:
                    for i in 0..<n { out[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
                }
            }
        }

        /// Calls `body` with tensor `name`'s bytes as stored (for I8 tensors, read without conversion).
        public func withBytes<T>(_ name: String, dtype: DType, count: Int, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
            guard let entry = entries[name] else { throw FormatError(path: path, reason: "no tensor named '\(name)'") }
            guard entry.dtype == dtype, entry.elementCount == count else {
                throw FormatError(path: path, reason: "tensor '\(name)' is \(entry.dtype.rawValue) with \(entry.elementCount) elements, expected \(dtype.rawValue) with \(count)")
            }
            return try data.withUnsafeBytes { raw in
                try body(UnsafeRawBufferPointer(rebasing: raw[(dataStart + entry.range.lowerBound)..<(dataStart + entry.range.upperBound)]))
            }
        }

        /// Tensor `name` as a new Float array.
        public func floats(_ name: String) throws -> [Float] {
            guard let entry = entries[name] else { throw FormatError(path: path, reason: "no tensor named '\(name)'") }
            let storage = FloatStorage(count: entry.elementCount)
            try read(name, into: storage.buffer)
            return storage.buffer.array
        }
    }

    /// A tensor to write: name, shape and contents (Float32, or bytes of another dtype).
    public struct Tensor {
        public let name: String
        public let shape: [Int]
        public let dtype: DType
        /// The bytes, little-endian, `shape` elements of `dtype`.
        public let bytes: UnsafeRawBufferPointer
        public init(name: String, shape: [Int], values: FloatBuffer) {
            precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values for \(name)")
            self.name = name
            self.shape = shape
            dtype = .f32
            bytes = UnsafeRawBufferPointer(start: values.base, count: values.count * 4)
        }
        /// Raw bytes of `dtype` (the caller keeps them alive until the write returns).
        public init(name: String, shape: [Int], dtype: DType, bytes: UnsafeRawBufferPointer) {
            precondition(shape.reduce(1, *) * dtype.size == bytes.count, "shape \(shape) does not match \(bytes.count) bytes of \(dtype.rawValue) for \(name)")
            self.name = name
            self.shape = shape
            self.dtype = dtype
            self.bytes = bytes
        }
    }

    /// Serialises the header for `tensors` (in the given order).
    static func header(for tensors: [Tensor], metadata: [String: String]) throws -> Data {
        var object: [String: Any] = [:]
        if !metadata.isEmpty { object["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            let bytes = t.bytes.count
            object[t.name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        // Pad with spaces to an 8-byte boundary, as the reference writer does.
        while (json.count % 8) != 0 { json.append(0x20) }
        return json
    }

    /// Writes `tensors` atomically as a safetensors file.
    public static func write(_ tensors: [Tensor], metadata: [String: String] = [:], to url: URL) throws {
        let header = try header(for: tensors, metadata: metadata)
        try AtomicFile.write(to: url) { writer in
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { try writer.write($0) }
            try writer.write(header)
            for t in tensors where t.bytes.count > 0 {
                try writer.write(t.bytes)
            }
        }
    }
}
