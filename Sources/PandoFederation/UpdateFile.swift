import Foundation
import PandoEngine

/// An update's delta as it travels and rests on disk: the Float32 values of the trained
/// tensors (``TensorSelection``) in layout order, little-endian, nothing else
/// (`4 × trained parameter count` bytes). Its SHA-256 is `ModelUpdate.wireSHA256`; the
/// layout both ends agree on comes from the global version the school trained from, and
/// the selection from the round's plan.
public enum UpdateFile {
    /// Writes the `selection`'s tensors of `delta` to `url` atomically, mode 0600.
    public static func write(_ delta: ParameterBuffer, selection: TensorSelection, to url: URL) throws {
        guard !selection.frozen.isEmpty else { return try write(delta, to: url) }
        let values = delta.buffer
        try withExtendedLifetime(delta) {
            try AtomicFile.write(to: url, mode: 0o600) { writer in
                for spec in selection.trained {
                    try writer.write(UnsafeRawBufferPointer(start: values.base + spec.offset, count: 4 * spec.count))
                }
            }
        }
    }

    /// Reads an update of `selection`'s tensors into `delta`, zero in every frozen tensor.
    public static func read(_ url: URL, into delta: ParameterBuffer, selection: TensorSelection) throws {
        guard !selection.frozen.isEmpty else { return try read(url, into: delta) }
        let fd = try openChecked(url, bytes: 4 * selection.trainedCount,
                          what: "4 × \(selection.trainedCount) trained parameters; \(selection.frozen.count) tensors are frozen")
        defer { close(fd) }
        try withExtendedLifetime(delta) {
            var position = 0
            for spec in delta.layout.tensors {
                let view = delta.view(spec)
                guard !selection.frozen.contains(spec.name) else {
                    view.fill(0)
                    continue
                }
                try readFully(fd, into: UnsafeMutableRawPointer(view.base), bytes: 4 * spec.count, at: position, path: url.path)
                position += 4 * spec.count
            }
        }
    }

    /// Writes `delta` to `url` atomically (temp file, fsync, rename), mode 0600: it is
    /// derived from the school's data.
    public static func write(_ delta: ParameterBuffer, to url: URL) throws {
        let values = delta.buffer
        try withExtendedLifetime(delta) {
            try AtomicFile.write(to: url, mode: 0o600) { writer in
                #if _endian(little)
                try writer.write(UnsafeRawBufferPointer(start: values.base, count: 4 * values.count))
                #else
                var bytes = [UInt8]()
                bytes.reserveCapacity(4 * values.count)
                for i in 0..<values.count { withUnsafeBytes(of: values[i].bitPattern.littleEndian) { bytes += $0 } }
                try bytes.withUnsafeBytes { try writer.write($0) }
                #endif
            }
        }
    }

    /// Reads the file at `url` into `delta` (whose layout says how many values to expect).
    /// A file of another size is an error naming the file and both sizes; `delta` is then unchanged.
    public static func read(_ url: URL, into delta: ParameterBuffer) throws {
        let expected = 4 * delta.layout.count
        let fd = try openChecked(url, bytes: expected, what: "4 × \(delta.layout.count) parameters of the global model")
        defer { close(fd) }
        let values = delta.buffer
        try withExtendedLifetime(delta) {
            try readFully(fd, into: UnsafeMutableRawPointer(values.base), bytes: expected, at: 0, path: url.path)
            #if !_endian(little)
            for i in 0..<values.count { values.base[i] = Float(bitPattern: UInt32(littleEndian: values.base[i].bitPattern)) }
            #endif
        }
    }
}

extension UpdateFile {
    /// Opens `url` for reading after checking it holds exactly `bytes` bytes (`what` says why).
    static func openChecked(_ url: URL, bytes expected: Int, what: String) throws -> Int32 {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw UpdateFileError(path: url.path, reason: String(cString: strerror(errno))) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw UpdateFileError(path: url.path, reason: "cannot stat")
        }
        guard Int(st.st_size) == expected else {
            close(fd)
            throw UpdateFileError(path: url.path, reason: "\(st.st_size) bytes, expected \(expected) (\(what))")
        }
        return fd
    }
}

extension UpdateFile {
    /// Reads `bytes` bytes at file offset `at` into `raw`; a short file is an error naming the byte.
    static func readFully(_ fd: Int32, into raw: UnsafeMutableRawPointer, bytes: Int, at offset: Int, path: String) throws {
        var done = 0
        while done < bytes {
            let n = pread(fd, raw + done, bytes - done, off_t(offset + done))
            guard n > 0 else { throw UpdateFileError(path: path, reason: "short read at byte \(offset + done)") }
            done += n
        }
    }
}

public struct UpdateFileError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "update file \(path): \(reason)" }
}
