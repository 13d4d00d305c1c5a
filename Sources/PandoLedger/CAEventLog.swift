import Foundation

/// The district CA's own log of certificate events: `ca-events.jsonl` in the certificate
/// folder, appended by `pando certs` (`certificateIssued`, `certificateRevoked`,
/// `crlPublished`) and checked by `pando audit verify --ca-log`.
///
/// Same line format as `audit.jsonl` (`AuditFormat`: canonical JSON, `seq`, `prev` = hash of
/// the previous record's signed bytes), but signed with the CA's ECDSA P-256 key (DER
/// signature, base64) rather than only chained like a school's log: the CA key is the one
/// secret every certificate already rests on, and officers already hold its public half
/// (`ca.pem`). Only that key's holder can then write a record that verifies; someone who can
/// write to the folder but lacks the key cannot add, drop or change a record unnoticed. (The
/// key's holder could rewrite the log; the coordinator's own records of the schools it
/// admitted, each with its certificate serial, are what verify checks it against.)
///
/// One writer at a time (an exclusive `flock` while open); each append is fsynced and a
/// torn last line is cut off at open, as in `SchoolLog`.
public final class CAEventLog {
    public static let fileName = "ca-events.jsonl"
    public let url: URL
    /// What opening repaired (a torn last line); nil when nothing.
    public let recovery: String?
    /// The log's records, oldest first.
    public private(set) var records: [AuditRecord] = []
    private var length: Int
    private var lockFD: Int32

    /// Opens (creating if needed) `ca-events.jsonl` in the CA's `folder`.
    public init(folder: URL) throws {
        url = folder.appendingPathComponent(Self.fileName)
        let opened = try SchoolLog.openForAppend(url, inUse: "another `pando certs` command", salvage: nil)
        lockFD = opened.lockFD
        length = opened.length
        recovery = opened.recovery
        for line in opened.lines {
            do { records.append(try AuditRecord(line: line.number, bytes: line.bytes)) } catch {
                Foundation.close(lockFD)
                throw LedgerError("\(url.path): line \(line.number) is not a record: \(error)")
            }
        }
    }

    deinit { close() }

    /// Releases the lock.
    public func close() {
        if lockFD >= 0 {
            Foundation.close(lockFD)
            lockFD = -1
        }
    }

    /// Signs `entry` as the next record and appends it (fsynced).
    public func append(_ entry: AuditEntry, signer: some RecordSigner, time: Date = Date()) throws {
        guard lockFD >= 0 else { throw LedgerError("\(url.path): the CA log was closed") }
        let sealed = try AuditFormat.seal(entry, seq: (records.last?.seq ?? 0) + 1, prev: records.last?.hash ?? Digest.zero,
                                          time: time, federation: nil, key: signer)
        try SchoolLog.appendDurably(sealed.line, to: url, at: length)
        length += sealed.line.count
        records.append(try AuditRecord(line: records.count + 1, bytes: sealed.line.dropLast()))
    }
}
