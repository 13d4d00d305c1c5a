import Foundation
import GRDB

/// A global version as the coordinator recorded it.
public struct VersionRecord: Sendable, Equatable {
    /// SHA-256 of its model.safetensors.
    public let id: String
    /// The version it was aggregated from (nil for the federation's base model).
    public let parent: String?
    public let round: Int?
    public let strategy: String?
    public let strategyParameters: [String: CanonicalJSON]
    public let metrics: [String: Double]
    /// SHA-256 of every file of the version folder, by name.
    public let files: [String: String]
    public let weightBytes: Int
    public let createdAt: String
    /// When retention deleted its weights (the record stays, for lineage).
    public let prunedAt: String?
    public let tags: [String]
    /// Order of creation, 1 = base model.
    public let sequence: Int
}

/// Where a round stands.
public enum RoundStatus: String, Sendable {
    case inFlight, committed, aborted
}

/// One federation round as recorded.
public struct RoundRecord: Sendable, Equatable {
    public let number: Int
    public let baseVersion: String
    public let newVersion: String?
    public let status: RoundStatus
    public let strategy: String?
    public let strategyParameters: [String: CanonicalJSON]
    public let startedAt: String
    public let endedAt: String?
    public let reason: String?
}

/// The federation this state folder belongs to.
public struct FederationInfo: Sendable, Equatable {
    public let id: String
    public let name: String
    public let task: String
    public let createdAt: String
    public let headVersion: String?
}

/// What opening the ledger had to repair after a crash.
public struct RecoveryReport: Sendable, Equatable {
    /// Rounds that were in flight and are now recorded as aborted.
    public var abortedRounds: [Int] = []
    /// Staging/trash folders deleted.
    public var removedLeftovers: [String] = []
    /// Version folders written but never committed, deleted.
    public var removedUncommittedVersions: [String] = []
    /// Audit records restored to audit.jsonl from the database.
    public var auditRecordsRestored = 0
    /// True when a partial last line of audit.jsonl was cut off.
    public var partialAuditLineRemoved = false
    public var isEmpty: Bool { self == RecoveryReport() }
}

/// The coordinator's durable state: one folder holding
/// `state.sqlite` (GRDB: federation, schools, rounds, versions, tags, head
/// history, audit records), `versions/` (the `CheckpointStore`), `audit.jsonl`
/// (the signed, hash-chained audit log) and `keys/` (the signing key).
///
/// Crash safety: weights are written, fsynced and renamed into place before
/// the SQLite transaction that references them; a new version, its round
/// record and its audit record commit in that one transaction (SQLite with
/// `synchronous=FULL`). The audit record is inserted into the database in the
/// transaction and appended to `audit.jsonl` right after the commit; on open,
/// records the file lacks are re-appended, so the file never loses a committed
/// record. Opening also marks a round that was in flight as aborted (with an
/// audit record) and deletes uncommitted version folders, so the last
/// committed version is the head.
///
/// One writer at a time: a writable ledger holds an exclusive `flock` on
/// `LOCK` (released by the kernel if the process dies). Read-only ledgers
/// (`readOnly: true`) take no lock and repair nothing.
public final class CoordinatorLedger: @unchecked Sendable {
    public let folder: URL
    public let store: CheckpointStore
    public let auditURL: URL
    public let databaseURL: URL
    public let isReadOnly: Bool
    /// What opening repaired (empty for a clean open or read-only).
    public private(set) var recovery = RecoveryReport()
    /// True when this open created `keys/coordinator.key` (a new state, or `newSigningKey`).
    public private(set) var signingKeyCreated = false
    /// True when the created key replaces a lost one: the open appended a `signingKeyReplaced` record.
    public private(set) var signingKeyReplaced = false

    let dbQueue: DatabaseQueue
    private let key: CoordinatorSigningKey?
    private var lockFD: Int32 = -1
    /// Highest audit seq known to be in audit.jsonl. Mutated only inside
    /// `dbQueue.writeWithoutTransaction`, which serialises writers.
    private var fileSeq = 0
    /// Test hook: called at named points of commits; throwing simulates a failure there.
    var failpoint: (@Sendable (String) throws -> Void)?

    /// The default place of the coordinator's signing key in a state folder.
    public static func defaultKeyURL(in folder: URL) -> URL {
        folder.appendingPathComponent("keys/coordinator.key")
    }

    /// Opens the state folder. Writable opens create it if needed, take the
    /// lock, migrate the schema, and recover from a crash; `key` defaults to
    /// `keys/coordinator.key` in the folder, created for a new state (no audit record yet)
    /// or, when it is missing from an existing one, only with `newSigningKey`.
    public init(folder: URL, key: CoordinatorSigningKey? = nil, readOnly: Bool = false, newSigningKey: Bool = false) throws {
        self.folder = folder
        self.isReadOnly = readOnly
        auditURL = folder.appendingPathComponent("audit.jsonl")
        databaseURL = folder.appendingPathComponent("state.sqlite")
        let fm = FileManager.default
        if readOnly {
            guard fm.fileExists(atPath: databaseURL.path) else { throw LedgerError("\(folder.path): no coordinator state (state.sqlite missing)") }
            store = try CheckpointStore(folder: folder.appendingPathComponent("versions"), readOnly: true)
            var config = Configuration()
            config.readonly = true
            dbQueue = try DatabaseQueue(path: databaseURL.path, configuration: config)
            self.key = key
            return
        }
        try PrivateFiles.folder(folder)
        lockFD = open(folder.appendingPathComponent("LOCK").path, O_RDWR | O_CREAT, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            if lockFD >= 0 { Foundation.close(lockFD) }
            throw LedgerError("\(folder.path) is in use by another coordinator process (LOCK held)")
        }
        do {
            store = try CheckpointStore(folder: folder.appendingPathComponent("versions"))
            var config = Configuration()
            config.prepareDatabase { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            dbQueue = try DatabaseQueue(path: databaseURL.path, configuration: config)
            try Self.migrator.migrate(dbQueue)
            // SQLite creates its files with the umask's mode (its journal copies the database's).
            for file in [folder.appendingPathComponent("LOCK"), databaseURL] { try PrivateFiles.restrict(file) }
            if let key {
                self.key = key
            } else {
                let (found, created, replaced) = try Self.signingKey(in: folder, database: dbQueue, auditURL: auditURL,
                                                                     createIfMissing: newSigningKey)
                self.key = found
                signingKeyCreated = created
                signingKeyReplaced = replaced
            }
            try recover()
        } catch {
            Foundation.close(lockFD)
            throw error
        }
    }

    deinit { close() }

    /// The key at `keys/coordinator.key`, and whether it was created now. A missing key is
    /// created only for a new state (no audit record in the database or the file) or with
    /// `createIfMissing` (the operator asked): signing on silently with a fresh key would cut
    /// the log off from the public key officers verify it with.
    static func signingKey(in folder: URL, database: DatabaseQueue, auditURL: URL,
                           createIfMissing: Bool) throws -> (CoordinatorSigningKey, created: Bool, replaced: Bool) {
        let url = defaultKeyURL(in: folder)
        if FileManager.default.fileExists(atPath: url.path) { return (try CoordinatorSigningKey.load(from: url), false, false) }
        let records = try database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM audit") } ?? 0
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: auditURL.path)[.size] as? NSNumber)?.intValue ?? 0
        guard (records == 0 && fileBytes == 0) || createIfMissing else {
            throw LedgerError("\(url.path): the audit signing key is missing, but \(folder.path) already holds a signed audit log "
                + "(\(records) records). Restore keys/coordinator.key from a backup; only if it is lost for good, start once with "
                + "--new-signing-key (that start records signingKeyReplaced; later records verify with the new keys/coordinator.key.pub: give it to the officers, who verify with both keys)")
        }
        let key = CoordinatorSigningKey()
        try key.save(to: url)
        return (key, true, records > 0 || fileBytes > 0)
    }

    /// Releases the lock and the database.
    public func close() {
        if lockFD >= 0 {
            Foundation.close(lockFD)
            lockFD = -1
        }
    }

    // MARK: schema

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE federation (id TEXT PRIMARY KEY, name TEXT NOT NULL, task TEXT NOT NULL,
                    createdAt TEXT NOT NULL, headVersion TEXT);
                CREATE TABLE schools (id TEXT PRIMARY KEY, certificateSerial TEXT, status TEXT NOT NULL,
                    firstSeen TEXT NOT NULL, updatedAt TEXT NOT NULL);
                CREATE TABLE versions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, parent TEXT,
                    round INTEGER, strategy TEXT, strategyParameters TEXT NOT NULL, metrics TEXT NOT NULL,
                    files TEXT NOT NULL, weightBytes INTEGER NOT NULL, createdAt TEXT NOT NULL, prunedAt TEXT);
                CREATE TABLE tags (name TEXT PRIMARY KEY, version TEXT NOT NULL REFERENCES versions(id), createdAt TEXT NOT NULL);
                CREATE TABLE rounds (number INTEGER PRIMARY KEY, baseVersion TEXT NOT NULL, newVersion TEXT,
                    status TEXT NOT NULL, strategy TEXT, strategyParameters TEXT NOT NULL, startedAt TEXT NOT NULL,
                    endedAt TEXT, reason TEXT);
                CREATE TABLE heads (seq INTEGER PRIMARY KEY AUTOINCREMENT, version TEXT NOT NULL, previous TEXT,
                    cause TEXT NOT NULL, at TEXT NOT NULL);
                CREATE TABLE audit (seq INTEGER PRIMARY KEY, line BLOB NOT NULL, hash TEXT NOT NULL);
                """)
        }
        // State folders made before round history existed gain its tables on their next writable open.
        m.registerMigration("v2-round-history", migrate: createRoundHistoryTables)
        return m
    }

    // MARK: recovery

    private func recover() throws {
        var report = RecoveryReport()
        report.removedLeftovers = store.removeLeftovers()
        let now = Date()
        try dbQueue.writeWithoutTransaction { db in
            try db.inTransaction {
                // Before any record the new key signs: the officer's verifier switches keys here.
                if signingKeyReplaced, let key {
                    try appendAudit(db, AuditEntry(
                        event: .signingKeyReplaced,
                        reason: "keys/coordinator.key was missing; a new key was created (--new-signing-key): this record "
                            + "and every later one verify with the public key of this hash",
                        publicKeySHA256: key.publicKey.sha256), time: now)
                }
                let inFlight = try Row.fetchAll(db, sql: "SELECT number, baseVersion FROM rounds WHERE status = 'inFlight' ORDER BY number")
                for row in inFlight {
                    let number: Int = row["number"]
                    let reason = "coordinator restarted while the round was in flight"
                    try db.execute(sql: "UPDATE rounds SET status = 'aborted', endedAt = ?, reason = ? WHERE number = ?",
                                   arguments: [AuditFormat.timestamp(now), reason, number])
                    try appendAudit(db, AuditEntry(event: .roundAborted, round: number, baseVersion: row["baseVersion"], reason: reason), time: now)
                    report.abortedRounds.append(number)
                }
                return .commit
            }
            // Version folders no committed record references were written by a commit
            // that never reached its transaction: delete them. Pruned weights that
            // survived a crash between the pruning record and the deletion go too.
            let known = try Row.fetchAll(db, sql: "SELECT id, prunedAt FROM versions")
            let live = Set(known.filter { ($0["prunedAt"] as String?) == nil }.map { $0["id"] as String })
            for id in store.storedIDs() where !live.contains(id) {
                try store.removeWeights(id)
                if !known.contains(where: { ($0["id"] as String) == id }) { report.removedUncommittedVersions.append(id) }
            }
            try reconcileAuditFile(db, report: &report)
        }
        recovery = report
    }

    /// Makes audit.jsonl equal to the database's audit records: cuts a partial
    /// last line, checks the file's last record is the database's, appends what is missing.
    private func reconcileAuditFile(_ db: Database, report: inout RecoveryReport) throws {
        let fm = FileManager.default
        if !fm.fileExists(atPath: auditURL.path) { _ = fm.createFile(atPath: auditURL.path, contents: nil, attributes: [.posixPermissions: 0o600]) }
        try PrivateFiles.restrict(auditURL)
        let data = try Data(contentsOf: auditURL)
        var (lines, complete) = AuditFormat.lines(of: data)
        if !complete, let last = lines.popLast() {
            guard truncate(auditURL.path, off_t(data.count - last.bytes.count)) == 0 else {
                throw LedgerError("\(auditURL.path): cannot cut partial last line")
            }
            report.partialAuditLineRemoved = true
        }
        let dbCount = try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM audit") ?? 0
        guard lines.count <= dbCount else {
            throw LedgerError("\(auditURL.path) has \(lines.count) records but state.sqlite only \(dbCount): the database does not belong to this log")
        }
        if let last = lines.last {
            let stored = try Data.fetchOne(db, sql: "SELECT line FROM audit WHERE seq = ?", arguments: [lines.count])
            guard stored == last.bytes + Data([0x0A]) else {
                throw LedgerError("\(auditURL.path) line \(last.number) differs from the coordinator's record \(lines.count): the audit file was altered; run `pando audit verify`")
            }
        }
        fileSeq = lines.count
        report.auditRecordsRestored = dbCount - lines.count
        try flushAuditFile(db)
    }

    /// Appends the database's audit records beyond `fileSeq` to audit.jsonl.
    private func flushAuditFile(_ db: Database) throws {
        let rows = try Row.fetchAll(db, sql: "SELECT seq, line FROM audit WHERE seq > ? ORDER BY seq", arguments: [fileSeq])
        guard !rows.isEmpty else { return }
        try failpoint?("audit.beforeFileAppend")
        var data = Data()
        for row in rows { data.append(row["line"] as Data) }
        // A failed append is cut back: never a torn line for the next append to follow.
        try SchoolLog.appendDurably(data, to: auditURL)
        fileSeq = rows.last!["seq"]
    }

    // MARK: writing

    private func write<T>(_ body: (Database) throws -> T) throws -> T {
        guard !isReadOnly, key != nil else { throw LedgerError("the ledger was opened read-only") }
        return try dbQueue.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction {
                result = try body(db)
                return .commit
            }
            // The records are committed; the file is a copy, restored on the next
            // open if this append fails, so a failure here is not the caller's.
            try? flushAuditFile(db)
            return result!
        }
    }

    private func appendAudit(_ db: Database, _ entry: AuditEntry, time: Date) throws {
        guard let key else { throw LedgerError("no signing key") }
        let last = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        let seq = (last.map { $0["seq"] as Int } ?? 0) + 1
        let prev = last.map { $0["hash"] as String } ?? Digest.zero
        let federation = try String.fetchOne(db, sql: "SELECT id FROM federation LIMIT 1")
        let sealed = try AuditFormat.seal(entry, seq: seq, prev: prev, time: time, federation: federation, key: key)
        try db.execute(sql: "INSERT INTO audit (seq, line, hash) VALUES (?, ?, ?)", arguments: [seq, sealed.line, sealed.hash])
    }

    private func insertVersion(_ db: Database, _ staged: StagedVersion, parent: String?, round: Int?, strategy: String?,
                               parameters: [String: CanonicalJSON], metrics: [String: Double], time: Date) throws {
        let metricsJSON = CanonicalJSON.object(metrics.mapValues { .double($0) }).description
        let filesJSON = CanonicalJSON.object(staged.files.mapValues { .string($0) }).description
        if let existing = try Row.fetchOne(db, sql: "SELECT prunedAt FROM versions WHERE id = ?", arguments: [staged.id]) {
            // Same bytes as an earlier version: keep its lineage record, restore its weights.
            if (existing["prunedAt"] as String?) != nil {
                try db.execute(sql: "UPDATE versions SET prunedAt = NULL WHERE id = ?", arguments: [staged.id])
            }
            return
        }
        try db.execute(sql: """
            INSERT INTO versions (id, parent, round, strategy, strategyParameters, metrics, files, weightBytes, createdAt)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [staged.id, parent, round, strategy, CanonicalJSON.object(parameters).description,
                             metricsJSON, filesJSON, staged.weightBytes, AuditFormat.timestamp(time)])
    }

    private func setHead(_ db: Database, _ version: String, cause: String, time: Date) throws {
        let previous = try String.fetchOne(db, sql: "SELECT headVersion FROM federation LIMIT 1")
        try db.execute(sql: "UPDATE federation SET headVersion = ?", arguments: [version])
        try db.execute(sql: "INSERT INTO heads (version, previous, cause, at) VALUES (?, ?, ?, ?)",
                       arguments: [version, previous, cause, AuditFormat.timestamp(time)])
    }

    /// Installs the staged version's folder, runs `body`; if `body` fails and
    /// the folder was new and is unreferenced, deletes it again.
    private func withInstalled<T>(_ staged: StagedVersion, _ body: () throws -> T) throws -> T {
        let existed = store.hasWeights(staged.id)
        try store.install(staged)
        do {
            try failpoint?("commit.afterInstall")
            return try body()
        } catch {
            if !existed, (try? version(staged.id)) == nil { try? store.removeWeights(staged.id) }
            throw error
        }
    }

    /// Starts the federation from a base model (its first version, the head).
    @discardableResult
    public func createFederation(id: String, name: String, task: String, base: StagedVersion) throws -> VersionRecord {
        let now = Date()
        try withInstalled(base) {
            try write { db in
                guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM federation") == 0 else {
                    throw LedgerError("this state folder already holds a federation")
                }
                try db.execute(sql: "INSERT INTO federation (id, name, task, createdAt) VALUES (?, ?, ?, ?)",
                               arguments: [id, name, task, AuditFormat.timestamp(now)])
                try insertVersion(db, base, parent: nil, round: nil, strategy: nil, parameters: [:], metrics: [:], time: now)
                try setHead(db, base.id, cause: "created", time: now)
                try appendAudit(db, AuditEntry(event: .federationCreated, newVersion: base.id, reason: "task \(task)"), time: now)
            }
        }
        return try version(base.id)
    }

    /// Records the start of the next round from the current head. One round
    /// at a time: fails while another is in flight.
    @discardableResult
    public func startRound(strategy: String, parameters: [String: CanonicalJSON] = [:]) throws -> RoundRecord {
        let now = Date()
        let number: Int = try write { db in
            guard let head = try String.fetchOne(db, sql: "SELECT headVersion FROM federation LIMIT 1") else {
                throw LedgerError("no federation: create it first")
            }
            if let busy = try Int.fetchOne(db, sql: "SELECT number FROM rounds WHERE status = 'inFlight'") {
                throw LedgerError("round \(busy) is still in flight")
            }
            let number = (try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(number), 0) FROM rounds") ?? 0) + 1
            try db.execute(sql: """
                INSERT INTO rounds (number, baseVersion, status, strategy, strategyParameters, startedAt)
                VALUES (?, ?, 'inFlight', ?, ?, ?)
                """, arguments: [number, head, strategy, CanonicalJSON.object(parameters).description, AuditFormat.timestamp(now)])
            try appendAudit(db, AuditEntry(event: .roundStarted, round: number, baseVersion: head, strategy: strategy,
                                           strategyParameters: parameters), time: now)
            return number
        }
        return try round(number)
    }

    /// Appends an audit record for an event that changes no version or round:
    /// school selected, update received or rejected, certificate issued or
    /// revoked, connection refused, evaluation result rejected, a secure-aggregation round
    /// closed (before its commit or abort, which carry the version). School events also keep
    /// the schools table current.
    public func record(_ entry: AuditEntry) throws {
        let allowed: Set<AuditEvent> = [.schoolSelected, .updateReceived, .updateRejected, .certificateIssued, .certificateRevoked,
                                        .connectionRefused, .evaluationRejected, .secureAggregation]
        guard allowed.contains(entry.event) else { throw LedgerError("\(entry.event.rawValue) is recorded by its own ledger operation") }
        let now = Date()
        try write { db in
            if let school = entry.school {
                let t = AuditFormat.timestamp(now)
                try db.execute(sql: """
                    INSERT INTO schools (id, status, firstSeen, updatedAt) VALUES (?, 'active', ?, ?)
                    ON CONFLICT(id) DO UPDATE SET updatedAt = excluded.updatedAt
                    """, arguments: [school, t, t])
                if entry.event == .certificateIssued {
                    try db.execute(sql: "UPDATE schools SET status = 'active', certificateSerial = ? WHERE id = ?", arguments: [entry.certificateSerial, school])
                } else if entry.event == .certificateRevoked {
                    try db.execute(sql: "UPDATE schools SET status = 'revoked' WHERE id = ?", arguments: [school])
                }
            }
            try appendAudit(db, entry, time: now)
        }
    }

    /// Commits round `number`: installs the staged weights (fsynced, renamed),
    /// then in one transaction inserts the version (parent = the round's base),
    /// marks the round committed, moves the head and appends the audit record.
    @discardableResult
    public func commitRound(_ number: Int, version staged: StagedVersion, metrics: [String: Double] = [:],
                            examplesBySchool: [String: Int], privacy: [String: CanonicalJSON]? = nil) throws -> VersionRecord {
        let now = Date()
        try withInstalled(staged) {
            try write { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM rounds WHERE number = ?", arguments: [number]) else {
                    throw LedgerError("no round \(number)")
                }
                guard (row["status"] as String) == RoundStatus.inFlight.rawValue else {
                    throw LedgerError("round \(number) is \(row["status"] as String), not in flight")
                }
                let base: String = row["baseVersion"]
                let strategy: String? = row["strategy"]
                let parameters = (try? CanonicalJSON.parse(Data((row["strategyParameters"] as String).utf8)))?.objectValue ?? [:]
                try insertVersion(db, staged, parent: base, round: number, strategy: strategy, parameters: parameters, metrics: metrics, time: now)
                try failpoint?("commit.afterVersionInsert")
                try db.execute(sql: "UPDATE rounds SET status = 'committed', newVersion = ?, endedAt = ? WHERE number = ?",
                               arguments: [staged.id, AuditFormat.timestamp(now), number])
                try setHead(db, staged.id, cause: "round \(number)", time: now)
                try failpoint?("commit.beforeAudit")
                try appendAudit(db, AuditEntry(event: .roundCommitted, round: number, baseVersion: base, newVersion: staged.id,
                                               examples: examplesBySchool.values.reduce(0, +), examplesBySchool: examplesBySchool,
                                               strategy: strategy, strategyParameters: parameters, privacy: privacy), time: now)
            }
        }
        return try version(staged.id)
    }

    /// Records round `number` as aborted (the head does not move).
    public func abortRound(_ number: Int, reason: String) throws {
        let now = Date()
        try write { db in
            guard let base = try String.fetchOne(db, sql: "SELECT baseVersion FROM rounds WHERE number = ? AND status = 'inFlight'", arguments: [number]) else {
                throw LedgerError("round \(number) is not in flight")
            }
            try db.execute(sql: "UPDATE rounds SET status = 'aborted', endedAt = ?, reason = ? WHERE number = ?",
                           arguments: [AuditFormat.timestamp(now), reason, number])
            try appendAudit(db, AuditEntry(event: .roundAborted, round: number, baseVersion: base, reason: reason), time: now)
        }
    }

    /// Moves the head back (or to any recorded version whose weights exist and still hash to
    /// their recorded values: a corrupt version never becomes the head).
    /// History is kept: the move is a new head record and an audit record.
    @discardableResult
    public func rollback(to reference: String, reason: String? = nil) throws -> VersionRecord {
        let target = try version(reference)
        guard target.prunedAt == nil else { throw LedgerError("version \(target.id.prefix(12)) was pruned; its weights are gone") }
        try store.checkIntact(target.id, files: target.files)
        let now = Date()
        try write { db in
            if let busy = try Int.fetchOne(db, sql: "SELECT number FROM rounds WHERE status = 'inFlight'") {
                throw LedgerError("round \(busy) is in flight; abort it before rolling back")
            }
            let old = try String.fetchOne(db, sql: "SELECT headVersion FROM federation LIMIT 1")
            try setHead(db, target.id, cause: "rollback", time: now)
            try appendAudit(db, AuditEntry(event: .rollback, baseVersion: old, newVersion: target.id, reason: reason), time: now)
        }
        return target
    }

    /// Tags a version; tagged versions survive retention.
    public func tag(_ reference: String, as name: String) throws {
        let target = try version(reference)
        // A tag that looks like a hex id prefix would shadow prefix lookups of version ids.
        let hexLike = name.count >= 4 && name.allSatisfy { $0.isHexDigit }
        guard !name.isEmpty, !hexLike, name != "head" else {
            throw LedgerError("invalid tag name '\(name)': empty, 'head', or hex-like (it would shadow version id prefixes)")
        }
        let now = Date()
        try write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO tags (name, version, createdAt) VALUES (?, ?, ?)",
                           arguments: [name, target.id, AuditFormat.timestamp(now)])
            try appendAudit(db, AuditEntry(event: .versionTagged, newVersion: target.id, tag: name), time: now)
        }
    }

    /// Retention: deletes the weights of versions other than the newest
    /// `keepLast`, tagged ones, the head and an in-flight round's base. Their
    /// records stay (marked pruned, with an audit record each) so lineage
    /// remains verifiable. The records commit before any file is deleted.
    @discardableResult
    public func prune(keepLast: Int) throws -> [String] {
        guard keepLast >= 1 else { throw LedgerError("keep at least 1 version") }
        let now = Date()
        let pruned: [String] = try write { db in
            let live = try String.fetchAll(db, sql: "SELECT id FROM versions WHERE prunedAt IS NULL ORDER BY seq DESC")
            var keep = Set(live.prefix(keepLast))
            keep.formUnion(try String.fetchAll(db, sql: "SELECT version FROM tags"))
            keep.formUnion(try String.fetchAll(db, sql: "SELECT headVersion FROM federation WHERE headVersion IS NOT NULL"))
            keep.formUnion(try String.fetchAll(db, sql: "SELECT baseVersion FROM rounds WHERE status = 'inFlight'"))
            let doomed = live.filter { !keep.contains($0) }
            for id in doomed {
                try db.execute(sql: "UPDATE versions SET prunedAt = ? WHERE id = ?", arguments: [AuditFormat.timestamp(now), id])
                try appendAudit(db, AuditEntry(event: .versionPruned, newVersion: id, reason: "retention: keep last \(keepLast) and tagged"), time: now)
            }
            return doomed
        }
        for id in pruned { try store.removeWeights(id) }
        return pruned
    }

    // MARK: reading

    /// The federation, or nil before `createFederation`.
    public func federation() throws -> FederationInfo? {
        try dbQueue.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM federation LIMIT 1").map {
                FederationInfo(id: $0["id"], name: $0["name"], task: $0["task"], createdAt: $0["createdAt"], headVersion: $0["headVersion"])
            }
        }
    }

    /// The current head version (the last committed one, or a rollback target).
    public func head() throws -> VersionRecord? {
        guard let id = try federation()?.headVersion else { return nil }
        return try version(id)
    }

    /// All version records, oldest first.
    public func versions() throws -> [VersionRecord] {
        try dbQueue.read { db in
            let tags = try Self.tagMap(db)
            return try Row.fetchAll(db, sql: "SELECT * FROM versions ORDER BY seq").map { Self.versionRecord($0, tags: tags) }
        }
    }

    /// A version by full id, unique id prefix (≥ 4 hex digits), tag, or `head`.
    public func version(_ reference: String) throws -> VersionRecord {
        if reference == "head" {
            guard let head = try head() else { throw LedgerError("no head version yet") }
            return head
        }
        let all = try versions()
        if let v = all.first(where: { $0.id == reference || $0.tags.contains(reference) }) { return v }
        let matches = reference.count >= 4 ? all.filter { $0.id.hasPrefix(reference.lowercased()) } : []
        guard matches.count == 1 else {
            throw LedgerError(matches.isEmpty ? "no version '\(reference)'" : "'\(reference)' matches \(matches.count) versions; give more digits")
        }
        return matches[0]
    }

    /// All rounds, oldest first.
    public func rounds() throws -> [RoundRecord] {
        try dbQueue.read { db in try Row.fetchAll(db, sql: "SELECT * FROM rounds ORDER BY number").map(Self.roundRecord) }
    }

    /// Round `number`.
    public func round(_ number: Int) throws -> RoundRecord {
        guard let r = try dbQueue.read({ db in try Row.fetchOne(db, sql: "SELECT * FROM rounds WHERE number = ?", arguments: [number]) }) else {
            throw LedgerError("no round \(number)")
        }
        return Self.roundRecord(r)
    }

    /// The round in flight, if any.
    public func roundInFlight() throws -> RoundRecord? { try rounds().first { $0.status == .inFlight } }

    /// Head moves, oldest first: (version, previous head, cause, time).
    public func headHistory() throws -> [(version: String, previous: String?, cause: String, at: String)] {
        try dbQueue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM heads ORDER BY seq").map { ($0["version"], $0["previous"], $0["cause"], $0["at"]) }
        }
    }

    /// Number of audit records and the hash of the last (for verify to detect a truncated log).
    public func auditHead() throws -> (count: Int, lastHash: String?) {
        try dbQueue.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            return (row.map { $0["seq"] as Int } ?? 0, row.map { $0["hash"] as String })
        }
    }

    /// Schools seen: (identity, status, certificate serial).
    public func schools() throws -> [(id: String, status: String, certificateSerial: String?)] {
        try dbQueue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM schools ORDER BY id").map { ($0["id"], $0["status"], $0["certificateSerial"]) }
        }
    }

    private static func tagMap(_ db: Database) throws -> [String: [String]] {
        var map = [String: [String]]()
        for row in try Row.fetchAll(db, sql: "SELECT name, version FROM tags ORDER BY name") {
            map[row["version"] as String, default: []].append(row["name"])
        }
        return map
    }

    private static func object(_ text: String?) -> [String: CanonicalJSON] {
        guard let text, let value = try? CanonicalJSON.parse(Data(text.utf8)) else { return [:] }
        return value.objectValue ?? [:]
    }

    private static func versionRecord(_ row: Row, tags: [String: [String]]) -> VersionRecord {
        let id: String = row["id"]
        return VersionRecord(
            id: id, parent: row["parent"], round: row["round"], strategy: row["strategy"],
            strategyParameters: object(row["strategyParameters"]),
            metrics: object(row["metrics"]).compactMapValues(\.doubleValue),
            files: object(row["files"]).compactMapValues(\.stringValue),
            weightBytes: row["weightBytes"], createdAt: row["createdAt"], prunedAt: row["prunedAt"],
            tags: tags[id] ?? [], sequence: row["seq"])
    }

    private static func roundRecord(_ row: Row) -> RoundRecord {
        RoundRecord(number: row["number"], baseVersion: row["baseVersion"], newVersion: row["newVersion"],
                    status: RoundStatus(rawValue: row["status"]) ?? .aborted, strategy: row["strategy"],
                    strategyParameters: object(row["strategyParameters"]), startedAt: row["startedAt"],
                    endedAt: row["endedAt"], reason: row["reason"])
    }
}
