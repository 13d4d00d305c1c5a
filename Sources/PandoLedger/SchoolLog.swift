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
    /// The round's differential privacy (spend, δ, ε this round and in all), as the audit's `privacy` field has it.
    public var privacy: [String: CanonicalJSON]?
    /// Under secure aggregation: the SHA-256 of the two public keys this school advertised
    /// (`keysSHA256`) and the peers it masked with (`maskedWith`); `updateSHA256` is then the
    /// masked file's hash.
    public var secureAggregation: [String: CanonicalJSON]?
    public var time: Date

    public init(school: String, round: Int, baseVersion: String, updateSHA256: String, wireBytes: Int, examples: Int,
                federation: String? = nil, time: Date = Date()) {
        self.school = school; self.round = round; self.baseVersion = baseVersion; self.updateSHA256 = updateSHA256
        self.wireBytes = wireBytes; self.examples = examples; self.federation = federation; self.time = time
    }
}

/// What a school's client saw and decided, besides the updates it sent: the coordinator's
/// audit head an assignment carried (`anchorSeen`), a global version it accepted into its
/// lineage (`versionAccepted`), an assignment it declined (`assignmentDeclined`).
public struct SchoolLogEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// The coordinator's audit head (`auditSeq`, `auditHash`) as an assignment stated it:
        /// `pando audit verify` checks that the coordinator's log holds exactly that record.
        case anchorSeen
        /// A global version this school accepted (`version`, its claimed `parent` and
        /// `versionRound`, and `basis`: base, trusted or parent): its lineage, kept across restarts.
        case versionAccepted
        /// An assignment the school refused (`version`, `code`, `reason`).
        case assignmentDeclined
        /// PII replaced in the school's data before tokenisation (`counts` by kind, never the matches).
        case piiScrubbed
    }
    public var kind: Kind
    public var school: String
    /// The assignment's round, and its task (`train` or `evaluate`).
    public var round: Int
    public var task: String
    public var federation: String?
    public var auditSeq: Int?
    public var auditHash: String?
    public var version: String?
    public var parent: String?
    public var versionRound: Int?
    public var basis: String?
    /// Why a decline: a short token (the one sent to the coordinator) and the school's own sentence.
    public var code: String?
    public var reason: String?
    /// Numbers by name (`piiScrubbed`: replacements per kind and split).
    public var counts: [String: Int]?
    public var time: Date

    public init(_ kind: Kind, school: String, round: Int, task: String, federation: String? = nil, time: Date = Date()) {
        self.kind = kind; self.school = school; self.round = round; self.task = task; self.federation = federation; self.time = time
    }

    var fields: [String: CanonicalJSON] {
        var f: [String: CanonicalJSON] = ["event": .string(kind.rawValue), "school": .string(school), "round": .int(round), "task": .string(task)]
        if let federation { f["federation"] = .string(federation) }
        if let auditSeq { f["auditSeq"] = .int(auditSeq) }
        if let auditHash { f["auditHash"] = .string(auditHash) }
        if let version { f["version"] = .string(version) }
        if let parent { f["parent"] = .string(parent) }
        if let versionRound { f["versionRound"] = .int(versionRound) }
        if let basis { f["basis"] = .string(basis) }
        if let code { f["code"] = .string(code) }
        if let reason { f["reason"] = .string(AuditEntry.cut(reason, to: 300)) }
        if let counts { f["counts"] = .object(counts.mapValues { .int($0) }) }
        return f
    }
}

/// The school's append-only JSON Lines log: the updates it sent (`updateSent`) and what it
/// saw and decided (`SchoolLogEvent`).
///
/// Each line is canonical JSON (see `CanonicalJSON`) with `v`, `seq`, `prev`
/// (SHA-256 of the previous line's bytes without newline; 64 zeros first),
/// `time`, `event`, `school`, `round`, and the event's fields; an `updateSent` line has
/// `baseVersion`, `updateSHA256`, `wireBytes`, `examples` and `federation` (absent in older logs).
/// Lines are chained but not signed: the log is the school's own evidence,
/// checked against the coordinator's signed log by `pando audit verify`.
///
/// One writer at a time: an open log holds an exclusive `flock` on its file until `close()`
/// (or the process ends), so a second client on the same cache is refused instead of
/// forking the chain with its own `seq` and `prev`.
///
/// Each append is fsynced; an append that fails (a full disk) is cut back, so the
/// file only ever holds whole records. Opening repairs a torn last line (a crash, or a
/// torn write by an older version): it is cut off and its bytes kept in `<log>.torn`;
/// if a whole record chained to the line before ends it (an append that followed the
/// torn one), that record stays.
public final class SchoolLog: @unchecked Sendable {
    public let url: URL
    /// What opening repaired (a torn last line), for the school's log; nil when nothing.
    public let recovery: String?
    private let lock = NSLock()
    private var seq: Int
    private var prev: String
    /// Bytes of whole records: where the next append goes, and what a failed one is cut back to.
    private var length: Int
    /// The descriptor holding the log's flock; -1 once closed.
    private var lockFD: Int32

    /// Opens (creating if needed) the log at `url`; refuses when another process (or another
    /// open `SchoolLog` in this one) has it open.
    public init(url: URL) throws {
        self.url = url
        let opened = try Self.openForAppend(url, inUse: "another pando-client process", salvage: { torn, before in
            let previous = before.last.map { (seq: Self.seq(of: $0.bytes) ?? 0, hash: Digest.sha256($0.bytes)) } ?? (0, Digest.zero)
            return Self.chainedRecord(endingLine: torn, after: previous)
        })
        lockFD = opened.lockFD
        length = opened.length
        recovery = opened.recovery
        if let last = opened.lines.last {
            seq = Self.seq(of: last.bytes) ?? 0
            prev = Digest.sha256(last.bytes)
        } else {
            seq = 0
            prev = Digest.zero
        }
    }

    /// A log file opened for appending: its flock held, a torn last line cut off.
    struct Opened {
        let lockFD: Int32
        /// The whole records, in order.
        let lines: [(number: Int, bytes: Data)]
        /// Bytes of those records.
        let length: Int
        /// What was repaired, if anything.
        let recovery: String?
    }

    /// Creates `url` if missing (mode 0600, a new folder 0700), takes an exclusive `flock` on it
    /// (refused while held; `inUse` says by what), and cuts off a torn last line (no final newline,
    /// or not a record), keeping the whole record `salvage` finds at its end, chained to the lines before.
    static func openForAppend(_ url: URL, inUse: String,
                              salvage: ((Data, [(number: Int, bytes: Data)]) -> Data?)?) throws -> Opened {
        let fm = FileManager.default
        try PrivateFiles.folderIfMissing(url.deletingLastPathComponent())
        if !fm.fileExists(atPath: url.path) { _ = fm.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]) }
        try PrivateFiles.restrict(url)
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            if fd >= 0 { Foundation.close(fd) }
            throw LedgerError("\(url.path) is in use by \(inUse) (its flock is held): "
                + "two writers would fork its chain; stop the other one, or give each its own file")
        }
        do {
            let data = try Data(contentsOf: url)
            var (lines, complete) = AuditFormat.lines(of: data)
            guard let last = lines.last, !complete || seq(of: last.bytes) == nil else {
                return Opened(lockFD: fd, lines: lines, length: data.count, recovery: nil)
            }
            lines.removeLast()
            let salvaged = complete ? salvage?(last.bytes, lines) : nil
            let recovery = try cutTornLine(last, of: data, complete: complete, keeping: salvaged, in: url)
            let length = data.count - last.bytes.count - (complete ? 1 : 0) + (salvaged.map { $0.count + 1 } ?? 0)
            if let salvaged { lines.append((last.number, salvaged)) }
            return Opened(lockFD: fd, lines: lines, length: length, recovery: recovery)
        } catch {
            Foundation.close(fd)
            throw error
        }
    }

    deinit { close() }

    /// Releases the log's lock; appends fail afterwards.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        if lockFD >= 0 {
            Foundation.close(lockFD)
            lockFD = -1
        }
    }

    /// Appends one entry and fsyncs. Call after the update was sent.
    public func append(_ entry: SchoolLogEntry) throws {
        var fields: [String: CanonicalJSON] = [
            "event": "updateSent", "school": .string(entry.school), "round": .int(entry.round),
            "baseVersion": .string(entry.baseVersion), "updateSHA256": .string(entry.updateSHA256),
            "wireBytes": .int(entry.wireBytes), "examples": .int(entry.examples),
        ]
        if let federation = entry.federation { fields["federation"] = .string(federation) }
        if let privacy = entry.privacy { fields["privacy"] = .object(privacy) }
        if let secure = entry.secureAggregation { fields["secureAggregation"] = .object(secure) }
        try append(fields, time: entry.time)
    }

    /// Appends one event and fsyncs.
    public func append(_ event: SchoolLogEvent) throws {
        try append(event.fields, time: event.time)
    }

    /// Every record of the log, oldest first (the school reads its lineage back from them).
    public func records() throws -> [[String: CanonicalJSON]] {
        lock.lock()
        defer { lock.unlock() }
        let data = try Data(contentsOf: url).prefix(length)
        return AuditFormat.lines(of: data).lines.compactMap { (try? CanonicalJSON.parse($0.bytes))?.objectValue }
    }

    /// Adds `v`, `seq`, `prev`, `time` to `fields`, appends the line and fsyncs.
    private func append(_ fields: [String: CanonicalJSON], time: Date) throws {
        lock.lock()
        defer { lock.unlock() }
        guard lockFD >= 0 else { throw LedgerError("\(url.path): the school log was closed") }
        var object = fields
        object["v"] = 1
        object["seq"] = .int(seq + 1)
        object["prev"] = .string(prev)
        object["time"] = .string(AuditFormat.timestamp(time))
        let bytes = CanonicalJSON.object(object).encoded
        try Self.appendDurably(bytes + Data([0x0A]), to: url, at: length)
        seq += 1
        prev = Digest.sha256(bytes)
        length += bytes.count + 1
    }

    /// The `seq` of a line that is a school log record (a JSON object with an integer `seq`).
    static func seq(of line: Data) -> Int? {
        (try? CanonicalJSON.parse(line))?["seq"]?.intValue
    }

    /// A whole record at the end of a torn line, chained to the line before it (`seq` and
    /// `prev` follow on): what an append after a torn one wrote. Canonical records start with `{`.
    static func chainedRecord(endingLine line: Data, after previous: (seq: Int, hash: String)) -> Data? {
        for start in line.indices where line[start] == UInt8(ascii: "{") && start > line.startIndex {
            let candidate = line.subdata(in: start..<line.endIndex)
            guard let value = try? CanonicalJSON.parse(candidate), value.encoded == candidate,
                  value["seq"]?.intValue == previous.seq + 1, value["prev"]?.stringValue == previous.hash else { continue }
            return candidate
        }
        return nil
    }

    /// Cuts the torn last line off the file (after saving its bytes to `<log>.torn`, best
    /// effort: the disk may still be full); writes back `salvaged` in its place. Returns what it did.
    static func cutTornLine(_ line: (number: Int, bytes: Data), of data: Data, complete: Bool, keeping salvaged: Data?,
                            in url: URL) throws -> String {
        let start = data.count - line.bytes.count - (complete ? 1 : 0)
        let torn = URL(fileURLWithPath: url.path + ".torn")
        let kept = (try? appendDurably(data.subdata(in: start..<data.count), to: torn)) != nil
        // The salvaged record is a suffix of the torn line: written over its start, it needs no new space.
        try rewrite(url, at: start, with: salvaged.map { $0 + Data([0x0A]) } ?? Data())
        return "\(url.path): line \(line.number) was torn (an append cut by a crash or a full disk): cut off"
            + (kept ? ", its \(data.count - start) bytes kept in \(torn.lastPathComponent)" : " (its bytes could not be kept)")
            + (salvaged == nil ? "" : "; the whole record that ended it was kept")
    }

    /// Writes `data` at `offset` and cuts the file right after it, then fsyncs.
    static func rewrite(_ url: URL, at offset: Int, with data: Data) throws {
        let fd = open(url.path, O_WRONLY)
        guard fd >= 0 else { throw LedgerError("\(url.path): cannot open to repair: \(String(cString: strerror(errno)))") }
        defer { Foundation.close(fd) }
        guard write(fd, data, at: offset), ftruncate(fd, off_t(offset + data.count)) == 0, fsync(fd) == 0 else {
            throw LedgerError("\(url.path): cannot cut the torn last line at byte \(offset): \(String(cString: strerror(errno)))")
        }
    }

    /// Writes `data` at `end` (the end of the file's whole records; default: the file's end)
    /// and fsyncs. Bytes past `end` (a torn earlier append) are cut first; if the write or the
    /// fsync fails the file is cut back to `end`, so a full disk never leaves a torn line for
    /// the next append to follow.
    static func appendDurably(_ data: Data, to url: URL, at end: Int? = nil) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT, 0o600)
        guard fd >= 0 else { throw LedgerError("\(url.path): cannot open for append: \(String(cString: strerror(errno)))") }
        defer { Foundation.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LedgerError("\(url.path): cannot stat: \(String(cString: strerror(errno)))") }
        let length = end ?? Int(st.st_size)
        if st.st_size != off_t(length), ftruncate(fd, off_t(length)) != 0 {
            throw LedgerError("\(url.path): cannot cut bytes past the last whole record (byte \(length)): \(String(cString: strerror(errno)))")
        }
        guard write(fd, data, at: length), fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            let cut = ftruncate(fd, off_t(length)) == 0 && fsync(fd) == 0
            throw LedgerError("\(url.path): append failed: \(reason)" + (cut ? "" : "; the partial record could not be cut back"))
        }
    }

    /// pwrite of all of `data` at `offset`; false on an error (errno says which).
    private static func write(_ fd: Int32, _ data: Data, at offset: Int) -> Bool {
        data.withUnsafeBytes { raw -> Bool in
            var done = 0
            while done < raw.count {
                let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                if n < 0 { if errno == EINTR { continue }; return false }
                if n == 0 { errno = ENOSPC; return false }
                done += n
            }
            return true
        }
    }
}
