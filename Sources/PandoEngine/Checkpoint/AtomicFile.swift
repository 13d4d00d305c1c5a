import Foundation

/// Writes files so that readers only ever see the old contents or the
/// complete new contents: data goes to a temporary file in the same folder,
/// which is flushed with `fsync`, renamed over the destination, and the folder
/// itself is then synced so the rename survives a crash.
public enum AtomicFile {
    public struct WriteError: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "cannot write \(path): \(reason)" }
    }

    /// Streams the file's bytes through `produce`, which receives a writer. `mode` is the new
    /// file's (before the umask): 0600 for what only its owner may read.
    public static func write(to url: URL, mode: mode_t = 0o644, _ produce: (inout Writer) throws -> Void) throws {
        let directory = url.deletingLastPathComponent()
        let temp = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(temp.path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw WriteError(path: url.path, reason: String(cString: strerror(errno))) }
        var writer = Writer(fd: fd, path: url.path)
        do {
            try produce(&writer)
            try writer.flush()
            guard fsync(fd) == 0 else { throw WriteError(path: url.path, reason: "fsync: \(String(cString: strerror(errno)))") }
            close(fd)
        } catch {
            close(fd)
            unlink(temp.path)
            throw error
        }
        guard rename(temp.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp.path)
            throw WriteError(path: url.path, reason: "rename: \(reason)")
        }
        syncDirectory(directory)
    }

    /// Writes `data` atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { writer in try writer.write(data) }
    }

    /// fsyncs a directory so that a completed rename in it is durable.
    public static func syncDirectory(_ directory: URL) {
        let dfd = open(directory.path, O_RDONLY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// A buffered writer over a file descriptor.
    public struct Writer {
        let fd: Int32
        let path: String
        private var pending = [UInt8]()
        public private(set) var bytesWritten = 0

        init(fd: Int32, path: String) {
            self.fd = fd
            self.path = path
            pending.reserveCapacity(1 << 20)
        }

        public mutating func write(_ data: Data) throws {
            try data.withUnsafeBytes { try write(UnsafeRawBufferPointer($0)) }
        }

        public mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
            if bytes.count >= 1 << 16 {
                try flush()
                try writeAll(bytes)
            } else {
                pending.append(contentsOf: bytes)
                if pending.count >= 1 << 20 { try flush() }
            }
            bytesWritten += bytes.count
        }

        public mutating func flush() throws {
            guard !pending.isEmpty else { return }
            let chunk = pending
            pending.removeAll(keepingCapacity: true)
            try chunk.withUnsafeBytes { try writeAll($0) }
        }

        private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
            var offset = 0
            while offset < bytes.count {
                let n = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw WriteError(path: path, reason: String(cString: strerror(errno)))
                }
                offset += n
            }
        }
    }
}
