import Foundation

/// What a school's client sent in one round: its own evidence for audits.
public struct SchoolLogEntry: Sendable, Equatable {
    /// School identity (as in its certificate).
    public var school: String
    public var round: Int
    /// The global version the update was computed from.
    public var baseVersion: String
    /// SHA-256 of the update bytes as sent.
    public var updateSHA256: String
    /// Bytes of the update as sent.
    public var wireBytes: Int
    public var examples: Int
    public var federation: String?
    public var time: Date

    public init(school: String, round: Int, baseVersion: String, updateSHA256: String, wireBytes: Int, examples: Int,
                federation: String? = nil, time: Date = Date()) {
        self.school = school; self.round = round; self.baseVersion = baseVersion; self.updateSHA256 = updateSHA256
        self.wireBytes = wireBytes; self.examples = examples; self.federation = federation; self.time = time
    }
}

/// The school's append-only JSON Lines log of updates it sent.
///
/// Each line is canonical JSON (see `CanonicalJSON`) with `v`, `seq`, `prev`
/// (SHA-256 of the previous line's bytes without newline; 64 zeros first),
/// `time`, `event` ("updateSent"), `school`, `round`, `baseVersion`,
/// `updateSHA256`, `wireBytes`, `examples` and optionally `federation`.
/// Lines are chained but not signed: the log is the school's own evidence,
/// checked against the coordinator's signed log by `pando audit verify`.
/// Each append is fsynced; a partial last line left by a crash is dropped on open.
public final class SchoolLog: @unchecked Sendable {
    public let url: URL
    private let lock = NSLock()
    private var seq: Int
    private var prev: String

    /// Opens (creating if needed) the log at `url`.
    public init(url: URL) throws {
        self.url = url
        let fm = FileManager.default
        try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        if !fm.fileExists(atPath: url.path) { _ = fm.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]) }
        let data = try Data(contentsOf: url)
        let (lines, complete) = AuditFormat.lines(of: data)
        var kept = lines
        if !complete, let last = lines.last {
            // A crash cut the last append: drop it (it was never acknowledged).
            kept.removeLast()
            truncate(url.path, off_t(data.count - last.bytes.count))
        }
        if let last = kept.last {
            guard let object = try? CanonicalJSON.parse(last.bytes), let s = object["seq"]?.intValue else {
                throw LedgerError("\(url.path): line \(last.number) is not a school log record")
            }
            seq = s
            prev = Digest.sha256(last.bytes)
        } else {
            seq = 0
            prev = Digest.zero
        }
    }

    /// Appends one entry and fsyncs. Call after the update was sent.
    public func append(_ entry: SchoolLogEntry) throws {
        lock.lock()
        defer { lock.unlock() }
        var object: [String: CanonicalJSON] = [
            "v": 1, "seq": .int(seq + 1), "prev": .string(prev), "time": .string(AuditFormat.timestamp(entry.time)),
            "event": "updateSent", "school": .string(entry.school), "round": .int(entry.round),
            "baseVersion": .string(entry.baseVersion), "updateSHA256": .string(entry.updateSHA256),
            "wireBytes": .int(entry.wireBytes), "examples": .int(entry.examples),
        ]
        if let federation = entry.federation { object["federation"] = .string(federation) }
        let bytes = CanonicalJSON.object(object).encoded
        try Self.appendDurably(bytes + Data([0x0A]), to: url)
        seq += 1
        prev = Digest.sha256(bytes)
    }

    /// Appends bytes with O_APPEND and fsyncs.
    static func appendDurably(_ data: Data, to url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_APPEND | O_CREAT, 0o600)
        guard fd >= 0 else { throw LedgerError("\(url.path): cannot open for append: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let ok = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
        guard ok, fsync(fd) == 0 else { throw LedgerError("\(url.path): append failed: \(String(cString: strerror(errno)))") }
    }
}
