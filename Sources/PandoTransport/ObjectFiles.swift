import Crypto
import Foundation
import NIOCore
import PandoWire

/// Reads an object from a file by offset (pread), never holding more than one chunk.
final class FileObjectSource {
    let fd: Int32
    let size: UInt64

    init(url: URL) throws {
        fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw TransportError.transferFailed("cannot open \(url.path): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TransportError.transferFailed("cannot stat \(url.path)") }
        size = UInt64(st.st_size)
    }

    func read(offset: UInt64, count: Int, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: count)
        var done = 0
        while done < count {
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { ptr in
                max(0, pread(fd, ptr.baseAddress, count - done, off_t(offset) + off_t(done)))
            }
            guard n > 0 else { throw TransportError.transferFailed("short read at offset \(offset + UInt64(done))") }
            done += n
        }
        return buffer
    }

    func sha256() throws -> ObjectDigest {
        try Self.hash(fd: fd, upTo: size)
    }

    static func hash(fd: Int32, upTo size: UInt64, into hasher: inout SHA256) throws {
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var off: UInt64 = 0
        while off < size {
            let want = Int(min(UInt64(buf.count), size - off))
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(off)) }
            guard n > 0 else { throw TransportError.transferFailed("short read while hashing at \(off)") }
            hasher.update(data: buf[0..<n])
            off += UInt64(n)
        }
    }

    static func hash(fd: Int32, upTo size: UInt64) throws -> ObjectDigest {
        var h = SHA256()
        try hash(fd: fd, upTo: size, into: &h)
        return ObjectDigest(h.finalize())
    }

    func close() { _ = Foundation.close(fd) }
}

/// Another receiver (typically one whose connection just dropped and is still draining
/// buffered chunks) holds the partial file of the same destination.
struct SinkBusy: Error {}

/// Writes an incoming object to `<destination>.partial`, remembering which object it is in
/// `<destination>.partial.meta` so a later attempt can resume; `commit` renames into place.
final class FileObjectSink {
    let destination: URL
    let partial: URL
    let meta: URL
    let fd: Int32
    private(set) var offset: UInt64
    private var hasher = SHA256()

    /// Opens (or creates) the partial file and takes an exclusive lock on it, so a receiver
    /// left over from a dropped connection can never write into the file a newer attempt is
    /// resuming. Throws `SinkBusy` while another receiver holds the lock.
    init(destination: URL, offer: ObjectOffer) throws {
        self.destination = destination
        partial = URL(fileURLWithPath: destination.path + ".partial")
        meta = URL(fileURLWithPath: destination.path + ".partial.meta")
        fd = open(partial.path, O_RDWR | O_CREAT, 0o600)
        guard fd >= 0 else { throw TransportError.transferFailed("cannot create \(partial.path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            _ = Foundation.close(fd)
            if busy { throw SinkBusy() }
            throw TransportError.transferFailed("cannot lock \(partial.path): \(reason)")
        }
        let expected = "\(offer.sha256.hex) \(offer.size)"
        let existing = (try? String(contentsOf: meta, encoding: .utf8)) ?? ""
        if existing != expected {
            do {
                guard ftruncate(fd, 0) == 0 else { throw TransportError.transferFailed("cannot truncate \(partial.path)") }
                try Data(expected.utf8).write(to: meta, options: .atomic)
                chmod(meta.path, 0o600)  // like the partial file: only its owner's
            } catch {
                _ = Foundation.close(fd)
                throw error
            }
        }
        var st = stat()
        fstat(fd, &st)
        var have = min(UInt64(st.st_size), offer.size)
        if have == offer.size && have > 0 { have = 0 }  // a complete-but-uncommitted file: re-verify by re-fetching
        if ftruncate(fd, off_t(have)) != 0 { have = 0 }
        offset = have
        try FileObjectSource.hash(fd: fd, upTo: have, into: &hasher)
    }

    func append(_ data: ByteBuffer) throws {
        let n = data.readableBytes
        let written = data.withUnsafeReadableBytes { ptr -> Int in
            var done = 0
            while done < n {
                let w = pwrite(fd, ptr.baseAddress! + done, n - done, off_t(offset) + off_t(done))
                if w <= 0 { return done }
                done += w
            }
            return done
        }
        guard written == n else { throw TransportError.transferFailed("cannot write \(partial.path): \(String(cString: strerror(errno)))") }
        data.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        offset += UInt64(n)
    }

    func digest() -> ObjectDigest { ObjectDigest(hasher.finalize()) }

    /// rename(2) over the destination (atomic: a crash leaves the old or the new object, never
    /// neither), then fsync the folder so the rename itself is durable.
    func commit() throws {
        guard fsync(fd) == 0 else { throw TransportError.transferFailed("cannot fsync \(partial.path): \(String(cString: strerror(errno)))") }
        guard rename(partial.path, destination.path) == 0 else {
            throw TransportError.transferFailed("cannot rename \(partial.path) to \(destination.path): \(String(cString: strerror(errno)))")
        }
        let dir = open(destination.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY)
        if dir >= 0 {
            fsync(dir)
            _ = Foundation.close(dir)
        }
        try? FileManager.default.removeItem(at: meta)
    }

    func discard() {
        try? FileManager.default.removeItem(at: partial)
        try? FileManager.default.removeItem(at: meta)
    }

    func close() { _ = Foundation.close(fd) }
}
