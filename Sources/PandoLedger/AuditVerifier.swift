import Foundation

/// One thing `verify` found, located by file and line.
public struct VerificationFinding: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable { case problem, note }
    public let severity: Severity
    public let file: String
    public let line: Int?
    public let message: String
    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(message)" }
}

/// The outcome of `AuditVerifier.verify`.
public struct VerificationReport: Sendable {
    public internal(set) var findings: [VerificationFinding] = []
    public internal(set) var recordsChecked = 0
    public internal(set) var validSignatures = 0
    public internal(set) var clientEntriesChecked = 0
    /// Audit heads the schools logged (`anchorSeen`) checked against the coordinator's log.
    public internal(set) var anchorsChecked = 0
    public internal(set) var versionFilesChecked = 0
    public internal(set) var keyFingerprint = ""
    /// The log's last record: what an officer passes as `--since` next time.
    public internal(set) var head: AuditPosition?
    /// The CA's event log (`--ca-log`): records read, signatures valid, the CA key's fingerprint.
    public internal(set) var caRecordsChecked = 0
    public internal(set) var caValidSignatures = 0
    public internal(set) var caKeyFingerprint = ""
    /// Updates whose differential privacy was recomputed (with an accountant passed to `verify`).
    public internal(set) var privacyRecordsChecked = 0
    public var problems: [VerificationFinding] { findings.filter { $0.severity == .problem } }
    public var notes: [VerificationFinding] { findings.filter { $0.severity == .note } }
    /// True when nothing is wrong.
    public var isValid: Bool { problems.isEmpty }

    mutating func problem(_ file: String, _ line: Int?, _ message: String) {
        findings.append(VerificationFinding(severity: .problem, file: file, line: line, message: message))
    }
    mutating func note(_ file: String, _ line: Int?, _ message: String) {
        findings.append(VerificationFinding(severity: .note, file: file, line: line, message: message))
    }

    /// A report for a person, fit for a terminal: findings quote the logs (event names,
    /// reasons, school ids), so each is passed through `TerminalText.safe`.
    public func render() -> String {
        var out = "audit log: \(recordsChecked) records, \(validSignatures) signatures valid with key \(keyFingerprint)\n"
        if clientEntriesChecked > 0 || anchorsChecked > 0 {
            out += "school logs: \(clientEntriesChecked) updates and \(anchorsChecked) audit anchors cross-checked\n"
        }
        if versionFilesChecked > 0 { out += "checkpoints: \(versionFilesChecked) version files hashed\n" }
        if privacyRecordsChecked > 0 { out += "differential privacy: ε of \(privacyRecordsChecked) updates recomputed from their (q, σ, steps)\n" }
        if !caKeyFingerprint.isEmpty {
            out += "CA log: \(caRecordsChecked) records, \(caValidSignatures) signatures valid with the CA key \(caKeyFingerprint)\n"
        }
        if !problems.isEmpty {
            out += "\nPROBLEMS (\(problems.count)):\n"
            for p in problems { out += "  \(TerminalText.safe(p.description))\n" }
        }
        if !notes.isEmpty {
            out += "\nnotes:\n"
            for n in notes { out += "  \(TerminalText.safe(n.description))\n" }
        }
        out += isValid ? "\nVERIFIED\n" : "\nFAILED: \(problems.count) problem\(problems.count == 1 ? "" : "s")\n"
        if isValid, let head { out += "head: seq \(head.seq), hash \(head.hash) (next time: --since \(head))\n" }
        return out
    }

    /// The report for tools (`pando audit verify --json`); print its `terminalSafeDescription`.
    public var json: CanonicalJSON {
        let items: [CanonicalJSON] = findings.map { f in
            var o: [String: CanonicalJSON] = ["severity": .string(f.severity.rawValue), "file": .string(f.file), "message": .string(f.message)]
            if let line = f.line { o["line"] = .int(line) }
            return .object(o)
        }
        return .object([
            "valid": .bool(isValid), "records": .int(recordsChecked), "validSignatures": .int(validSignatures),
            "clientEntries": .int(clientEntriesChecked), "anchors": .int(anchorsChecked), "versionFiles": .int(versionFilesChecked),
            "caRecords": .int(caRecordsChecked), "caValidSignatures": .int(caValidSignatures),
            "key": .string(keyFingerprint), "findings": .array(items),
            "head": head.map { .string($0.description) } ?? .null,
        ])
    }
}

/// A record of the audit log named by its `seq` and hash, as `SEQ:HASH`: where an officer's
/// last verification ended (`pando audit verify --since`).
public struct AuditPosition: Sendable, Equatable, CustomStringConvertible {
    public let seq: Int
    public let hash: String
    public init(seq: Int, hash: String) {
        self.seq = seq
        self.hash = hash
    }
    /// Parses `SEQ:HASH` (a positive integer, 64 lower-case hex digits); nil otherwise.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let seq = Int(parts[0]), seq >= 1, Digest.isSHA256(String(parts[1])) else { return nil }
        self.init(seq: seq, hash: String(parts[1]))
    }
    public var description: String { "\(seq):\(hash)" }
}

/// Independent verification of the audit trail, for a privacy officer.
///
/// Checks: (1) every line of the coordinator's log parses, is canonical, is
/// signed by the given key, has the next `seq` and the previous record's hash
/// as `prev`; (2) each school log's own chain, and that each update a school
/// says it sent is in the coordinator's log with the same hash (and example
/// count), and each update the coordinator recorded from that school is in the
/// school's log, and each audit head a school logged (`anchorSeen`) is a record of the
/// coordinator's log with that hash; every round committed credits exactly the schools whose
/// updates it accepted; with `since`, the record an officer's last verification ended at is
/// still there; (3) with a state folder: every version file hashes to its id,
/// every version committed in the signed log is on disk or recorded as pruned,
/// each committed version's base is a known version, the database agrees with
/// the signed log (lineage, and the log not cut short).
public enum AuditVerifier {
    public static func verify(log: URL, key: AuditPublicKey, clientLogs: [URL] = [], checkpoints: URL? = nil,
                              since: AuditPosition? = nil, certificates: CertificateLog? = nil) -> VerificationReport {
        verify(log: log, keys: [key], clientLogs: clientLogs, checkpoints: checkpoints, since: since, certificates: certificates)
    }

    /// `keys`: the coordinator's public key, or several when the log spans a key replacement
    /// (`signingKeyReplaced`): the log's first record picks the key it starts with, and the
    /// key changes only at a replacement record, to the given key whose hash that record names.
    /// The CA's event log (`ca-events.jsonl`) and the CA's public key (from `ca.pem`).
    public struct CertificateLog: Sendable {
        public let url: URL
        public let key: CAPublicKey
        public init(url: URL, key: CAPublicKey) {
            self.url = url
            self.key = key
        }
    }

    /// How far apart the CA's clock and the coordinator's may be (and how long a new `crl.pem`
    /// may take to reach the coordinator) before a school selected after its certificate was
    /// revoked, or after it expired, is a problem.
    public static let clockTolerance: TimeInterval = 300

    public static func verify(log: URL, keys: [AuditPublicKey], clientLogs: [URL] = [], checkpoints: URL? = nil,
                              since: AuditPosition? = nil, certificates: CertificateLog? = nil,
                              privacy: EpsilonOfSpends? = nil) -> VerificationReport {
        var report = VerificationReport()
        report.keyFingerprint = keys.map(\.fingerprint).joined(separator: ", ")
        let logName = log.lastPathComponent
        let chain = checkChain(log, keys: keys, name: logName, report: &report)
        report.recordsChecked = chain.lines
        report.validSignatures = chain.validSignatures
        let records = chain.trusted
        if let last = chain.all.last, let seq = last.seq { report.head = AuditPosition(seq: seq, hash: last.hash) }
        if let since { checkSince(since, chain.all, logName: logName, report: &report) }
        checkCredits(records, logName: logName, report: &report)
        checkSecureAggregation(records, logName: logName, report: &report)
        if let privacy { checkPrivacy(records, logName: logName, epsilon: privacy, report: &report) }
        if !clientLogs.isEmpty { crossCheck(records, all: chain.all, logName: logName, clientLogs: clientLogs, report: &report) }
        if let certificates { checkCertificates(records, logName: logName, certificates, report: &report) }
        if let checkpoints { checkVersions(records, logName: logName, folder: checkpoints, report: &report) }
        return report
    }

    // MARK: chain

    /// What `checkChain` read: the records whose signature verified, the lines read, and the
    /// number of valid signatures.
    struct Chain {
        var trusted: [AuditRecord] = []
        /// Every record that parsed, trusted or not (to locate a `seq` an anchor names).
        var all: [AuditRecord] = []
        var lines = 0
        var validSignatures = 0
    }

    /// Checks a signed, hash-chained log (`audit.jsonl`, `ca-events.jsonl`): each line parses, is
    /// canonical, has format 1, the next `seq`, the previous record's hash as `prev`, and a valid
    /// signature by the key in use. The key in use is the one of `keys` that verifies the first
    /// signed record; a `signingKeyReplaced` record switches it to the key it names (by hash).
    static func checkChain(_ url: URL, keys: [any RecordVerifyingKey], name: String, expectedKey: String = "the coordinator's public key (keys/coordinator.key.pub)",
                           report: inout VerificationReport) -> Chain {
        var chain = Chain()
        guard let data = try? Data(contentsOf: url) else {
            report.problem(name, nil, "cannot read the log")
            return chain
        }
        let (lines, complete) = AuditFormat.lines(of: data)
        var previousHash = Digest.zero
        var previousSeq = 0
        var current: (any RecordVerifyingKey)?
        /// Set when a replacement names a key not given: later records cannot be checked.
        var missingKey: (line: Int, hash: String, unchecked: Int)?
        let given = keys.map(\.fingerprint).joined(separator: ", ")
        for (number, bytes) in lines {
            chain.lines += 1
            if number == lines.count, !complete {
                report.problem(name, number, "incomplete last record (no final newline): cut by a crash or truncated")
            }
            if bytes.isEmpty {
                report.problem(name, number, "empty line")
                continue
            }
            let record: AuditRecord
            do { record = try AuditRecord(line: number, bytes: bytes) } catch {
                report.problem(name, number, "not a valid record: \(error)")
                previousHash = Digest.sha256(bytes)
                previousSeq += 1
                continue
            }
            chain.all.append(record)
            let label = "seq \(record.seq.map(String.init) ?? "?"), \(record.eventName ?? "no event")"
            if CanonicalJSON.object(record.object).encoded != bytes {
                report.problem(name, number, "(\(label)) not in canonical form: the line was edited")
            }
            if record.object["v"]?.intValue != AuditFormat.version {
                report.problem(name, number, "(\(label)) unknown format version")
            }
            if record.event == .signingKeyReplaced {
                let hash = record.publicKeySHA256 ?? "?"
                if let next = keys.first(where: { $0.sha256 == hash }) {
                    current = next
                    missingKey = nil
                } else {
                    report.problem(name, number, "(\(label)) the signing key was replaced here by the key with SHA-256 \(hash.prefix(16))…, "
                        + "which is none of the keys given (\(given)): give its public key with another --key")
                    missingKey = (number, hash, 0)
                }
            }
            if let signature = record.signature {
                let key = current ?? keys.first { $0.isValid(signature: signature, for: record.signedBytes) }
                if let key, key.isValid(signature: signature, for: record.signedBytes) {
                    current = key
                    chain.validSignatures += 1
                    chain.trusted.append(record)
                } else if missingKey != nil {
                    missingKey!.unchecked += 1
                } else if let key, let other = keys.first(where: { $0.isValid(signature: signature, for: record.signedBytes) }) {
                    report.problem(name, number, "(\(label)) signed by key \(other.fingerprint), but key \(key.fingerprint) is in use here: "
                        + "a log changes keys only at a signingKeyReplaced record")
                } else {
                    report.problem(name, number, "(\(label)) signature does not verify with key \(key?.fingerprint ?? given): the record was altered or signed by another key")
                }
            } else {
                report.problem(name, number, "(\(label)) no signature")
            }
            let expectedSeq = previousSeq + 1
            if let seq = record.seq, seq != expectedSeq {
                report.problem(name, number, "(\(label)) seq is \(seq), expected \(expectedSeq): records are missing, inserted or reordered")
            } else if record.seq == nil {
                report.problem(name, number, "no seq")
            }
            if record.prev != previousHash {
                let what = number == 1 ? "the first record's prev is not 64 zeros: the log does not start at its beginning"
                    : "prev does not match the hash of line \(number - 1): a record before it was changed, removed or reordered"
                report.problem(name, number, "(\(label)) \(what)")
            }
            if record.eventName != nil, record.event == nil { report.note(name, number, "unknown event \(record.eventName!)") }
            previousHash = record.hash
            previousSeq = record.seq ?? expectedSeq
        }
        if let missingKey, missingKey.unchecked > 0 {
            report.problem(name, missingKey.line, "\(missingKey.unchecked) record(s) from here on are signed by the replacement key "
                + "\(missingKey.hash.prefix(16))…, which was not given: they are unchecked")
        }
        if lines.isEmpty { report.note(name, nil, "the log is empty") }
        if !lines.isEmpty, chain.validSignatures == 0, missingKey == nil {
            report.note(name, nil, "no record verifies with key \(given): is it \(expectedKey)?")
        }
        return chain
    }

    // MARK: since, credits

    /// The record an officer's last verification ended at must still be in the log, unchanged:
    /// a log rewritten up to it (with the coordinator's own key) no longer holds it.
    static func checkSince(_ since: AuditPosition, _ records: [AuditRecord], logName: String, report: inout VerificationReport) {
        guard let record = records.first(where: { $0.seq == since.seq }) else {
            report.problem(logName, nil, "--since \(since.seq):\(since.hash.prefix(16))…: the log has no record seq \(since.seq) "
                + "(it ends at \(records.last?.seq ?? 0)): records verified before were removed")
            return
        }
        if record.hash != since.hash {
            report.problem(logName, record.line, "--since \(since.seq):\(since.hash.prefix(16))…: record seq \(since.seq) now hashes to "
                + "\(record.hash.prefix(16))…: the log was rewritten at or before the record the last verification ended at")
        }
    }

    /// Each `roundCommitted` credits (`examplesBySchool`) exactly the schools whose update that
    /// round accepted (`updateReceived`), each with the example count its update record states.
    static func checkCredits(_ records: [AuditRecord], logName: String, report: inout VerificationReport) {
        var accepted = [Int: [String: AuditRecord]]()
        for r in records where r.event == .updateReceived {
            if let round = r.round, let school = r.school { accepted[round, default: [:]][school] = r }
        }
        for commit in records where commit.event == .roundCommitted {
            guard let round = commit.round else { continue }
            let credited = commit.examplesBySchool ?? [:]
            let updates = accepted[round] ?? [:]
            for (school, n) in credited.sorted(by: { $0.key < $1.key }) {
                guard let update = updates[school] else {
                    report.problem(logName, commit.line, "round \(round)'s commit credits school \(school) with \(n) examples, "
                        + "but no updateReceived record of round \(round) accepts an update from it")
                    continue
                }
                if let m = update.examples, m != n {
                    report.problem(logName, commit.line, "round \(round)'s commit credits school \(school) with \(n) examples; "
                        + "its accepted update (line \(update.line)) reports \(m)")
                }
            }
            for (school, update) in updates.sorted(by: { $0.key < $1.key }) where credited[school] == nil {
                report.problem(logName, commit.line, "round \(round)'s commit does not credit school \(school), whose update line \(update.line) accepted")
            }
            if let total = commit.examples, total != credited.values.reduce(0, +) {
                report.problem(logName, commit.line, "round \(round)'s commit counts \(total) examples, but credits \(credited.values.reduce(0, +))")
            }
        }
    }

    // MARK: certificates

    /// The CA's event log: its chain and signatures (by the CA key), its own consistency (a
    /// serial issued once, revoked only after it was issued, CRL numbers rising); then every
    /// school the coordinator's log names must have a certificate issued per the CA log, each
    /// selection's certificate serial must be one issued to that school, and not one the CA
    /// had revoked (or that had expired) by then, allowing `clockTolerance`.
    static func checkCertificates(_ records: [AuditRecord], logName: String, _ certificates: CertificateLog, report: inout VerificationReport) {
        let name = certificates.url.lastPathComponent
        let chain = checkChain(certificates.url, keys: [certificates.key], name: name, expectedKey: "the district CA's key (ca.pem)", report: &report)
        report.caRecordsChecked = chain.lines
        report.caValidSignatures = chain.validSignatures
        report.caKeyFingerprint = certificates.key.fingerprint
        var issued = [String: AuditRecord](), revoked = [String: AuditRecord](), schools = [String: Int]()
        var crl = 0
        for r in chain.trusted {
            switch r.event {
            case .certificateIssued, .certificateRevoked:
                guard let serial = r.certificateSerial else {
                    report.problem(name, r.line, "\(r.eventName!) without certificateSerial")
                    continue
                }
                if r.event == .certificateIssued {
                    if let first = issued[serial] { report.problem(name, r.line, "serial \(serial) is issued again (first at line \(first.line))") }
                    issued[serial] = issued[serial] ?? r
                    if r.certificateKind == "school", let school = r.school { schools[school] = schools[school] ?? r.line }
                } else {
                    if issued[serial] == nil { report.problem(name, r.line, "revokes serial \(serial), which no earlier record issues") }
                    revoked[serial] = revoked[serial] ?? r
                }
            case .crlPublished:
                let number = r.crlNumber ?? 0
                if number <= crl { report.problem(name, r.line, "CRL \(number) published after CRL \(crl): CRL numbers only rise") }
                crl = max(crl, number)
            default:
                report.problem(name, r.line, "\(r.eventName ?? "no event") is not a certificate event")
            }
        }
        let parse = ISO8601DateFormatter()
        parse.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        func date(_ s: String?) -> Date? { s.flatMap(parse.date(from:)) }
        var named = Set<String>()
        for r in records {
            guard let school = r.school else { continue }
            if schools[school] == nil, named.insert(school).inserted {
                report.problem(logName, r.line, "school \(school) is in the coordinator's log (\(r.eventName ?? "")), but \(name) records no certificate issued to it")
            }
            switch r.event {
            case .schoolSelected:
                guard let serial = r.certificateSerial else { continue }
                guard let cert = issued[serial] else {
                    report.problem(logName, r.line, "school \(school) was selected with certificate serial \(serial), which \(name) never issues")
                    continue
                }
                if cert.school != school {
                    report.problem(logName, r.line, "school \(school) was selected with certificate serial \(serial), which \(name):\(cert.line) issues to \(cert.school ?? cert.certificateKind ?? "another")")
                }
                guard let at = date(r.time) else { continue }
                if let revocation = revoked[serial], let when = date(revocation.revokedAt ?? revocation.time), at > when + clockTolerance {
                    report.problem(logName, r.line, "school \(school) was selected at \(r.time!) with certificate \(serial), which the CA revoked at "
                        + "\(revocation.revokedAt ?? revocation.time ?? "?") (\(name):\(revocation.line)): the coordinator did not have the new crl.pem")
                }
                if let end = date(cert.notAfter), at > end + clockTolerance {
                    report.problem(logName, r.line, "school \(school) was selected at \(r.time!) with certificate \(serial), which expired at \(cert.notAfter!)")
                }
            case .certificateIssued where r.certificateSerial.map { issued[$0] == nil } ?? true,
                 .certificateRevoked where r.certificateSerial.map { revoked[$0] == nil } ?? true:
                report.problem(logName, r.line, "\(r.eventName!) of \(school) (serial \(r.certificateSerial ?? "none")) is not in \(name)")
            default:
                break
            }
        }
    }

    // MARK: school logs

    struct ClientEntry {
        let file: String
        let line: Int
        let school: String
        let round: Int
        let update: String
        let examples: Int?
        let baseVersion: String?
        /// Absent in logs written before the school recorded it.
        let federation: String?
        /// Under secure aggregation: the hash of the keys the school advertised.
        var keysSHA256: String? = nil
    }

    /// An audit head a school logged from an assignment.
    struct ClientAnchor {
        let file: String
        let line: Int
        let school: String
        let round: Int
        let task: String
        let seq: Int
        let hash: String
        let federation: String?
    }

    /// A version a school accepted into its lineage, with the parent and round it was told.
    struct ClientVersion {
        let file: String
        let line: Int
        let school: String
        let version: String
        let parent: String?
        let round: Int?
    }

    /// What a school log holds, by kind of entry.
    struct ClientLog {
        var file: String
        var updates: [ClientEntry] = []
        var anchors: [ClientAnchor] = []
        var versions: [ClientVersion] = []
        /// School ids the entries name.
        var schools: Set<String> = []
        var lines = 0
    }

    static func readClientLog(_ url: URL, report: inout VerificationReport) -> ClientLog {
        let name = url.lastPathComponent
        var log = ClientLog(file: name)
        guard let data = try? Data(contentsOf: url) else {
            report.problem(name, nil, "cannot read the school log")
            return log
        }
        let (lines, complete) = AuditFormat.lines(of: data)
        log.lines = lines.count
        var previousHash = Digest.zero
        var previousSeq = 0
        for (number, bytes) in lines {
            if number == lines.count, !complete { report.problem(name, number, "incomplete last line (no final newline)") }
            guard let value = try? CanonicalJSON.parse(bytes), let object = value.objectValue else {
                report.problem(name, number, "not a valid JSON record")
                previousHash = Digest.sha256(bytes)
                previousSeq += 1
                continue
            }
            if value.encoded != bytes { report.problem(name, number, "not in canonical form: the line was edited") }
            let seq = object["seq"]?.intValue
            if seq != previousSeq + 1 { report.problem(name, number, "seq is \(seq.map(String.init) ?? "missing"), expected \(previousSeq + 1): lines missing or reordered") }
            if object["prev"]?.stringValue != previousHash {
                report.problem(name, number, "prev does not match the hash of the line before: a line was changed, removed or reordered")
            }
            previousHash = Digest.sha256(bytes)
            previousSeq = seq ?? previousSeq + 1
            let event = object["event"]?.stringValue ?? "updateSent"
            guard let school = object["school"]?.stringValue, let round = object["round"]?.intValue else {
                report.problem(name, number, "\(event) record lacks school or round")
                continue
            }
            log.schools.insert(school)
            let federation = object["federation"]?.stringValue
            switch event {
            case "updateSent":
                guard let update = object["updateSHA256"]?.stringValue else {
                    report.problem(name, number, "updateSent record lacks updateSHA256")
                    continue
                }
                log.updates.append(ClientEntry(file: name, line: number, school: school, round: round, update: update,
                                               examples: object["examples"]?.intValue, baseVersion: object["baseVersion"]?.stringValue,
                                               federation: federation,
                                               keysSHA256: object["secureAggregation"]?.objectValue?["keysSHA256"]?.stringValue))
            case SchoolLogEvent.Kind.anchorSeen.rawValue:
                guard let auditSeq = object["auditSeq"]?.intValue, let hash = object["auditHash"]?.stringValue else {
                    report.problem(name, number, "anchorSeen record lacks auditSeq or auditHash")
                    continue
                }
                log.anchors.append(ClientAnchor(file: name, line: number, school: school, round: round,
                                                task: object["task"]?.stringValue ?? "train", seq: auditSeq, hash: hash, federation: federation))
            case SchoolLogEvent.Kind.versionAccepted.rawValue:
                guard let version = object["version"]?.stringValue else {
                    report.problem(name, number, "versionAccepted record lacks version")
                    continue
                }
                log.versions.append(ClientVersion(file: name, line: number, school: school, version: version,
                                                  parent: object["parent"]?.stringValue, round: object["versionRound"]?.intValue))
            default:
                if SchoolLogEvent.Kind(rawValue: event) == nil { report.note(name, number, "unknown event \(event)") }
            }
        }
        if lines.isEmpty { report.note(name, nil, "the school log has no entries: nothing of this school is cross-checked") }
        report.clientEntriesChecked += log.updates.count
        return log
    }

    static func crossCheck(_ records: [AuditRecord], all: [AuditRecord], logName: String, clientLogs: [URL], report: inout VerificationReport) {
        let updates = records.filter { $0.event == .updateReceived || $0.event == .updateRejected }
        // A round the coordinator aborted produced no version, so an update one side holds and
        // the other lacks changed no model: the coordinator stopped (or the link broke) between
        // storing an update and recording it. Reported as a note, never silently.
        let aborted = Set(records.filter { $0.event == .roundAborted }.compactMap(\.round))
        let federation = records.lazy.compactMap { $0.object["federation"]?.stringValue }.first
        var clientEntries = [ClientEntry]()
        var anchors = [ClientAnchor]()
        var versions = [ClientVersion]()
        var fileOfSchool = [String: String]()
        for url in clientLogs {
            let log = readClientLog(url, report: &report)
            for school in log.schools { fileOfSchool[school] = log.file }
            clientEntries += log.updates
            anchors += log.anchors
            versions += log.versions
        }
        checkAnchors(anchors, all, logName: logName, federation: federation, report: &report)
        checkAcceptedVersions(versions, records, logName: logName, report: &report)
        // School → coordinator.
        for e in clientEntries {            let where_ = "school \(e.school) round \(e.round) update \(e.update.prefix(12))"
            if let a = e.federation, let b = federation, a != b {
                report.problem(e.file, e.line, "\(where_): logged for federation \(a), but the coordinator's log is of federation \(b)")
            }
            if let r = updates.first(where: { $0.school == e.school && $0.round == e.round && $0.updateSHA256 == e.update }) {
                if let a = e.examples, let b = r.examples, a != b {
                    report.problem(e.file, e.line, "\(where_): the school counts \(a) examples, the coordinator's log line \(r.line) records \(b)")
                }
                if let a = e.baseVersion, let b = r.baseVersion, a != b {
                    report.problem(e.file, e.line, "\(where_): base version \(a.prefix(12)) here, \(b.prefix(12)) in the coordinator's log line \(r.line)")
                }
                if r.event == .updateRejected { report.note(e.file, e.line, "\(where_) was rejected by the coordinator (log line \(r.line)): \(r.reason ?? "no reason")") }
                checkSecureKeys(e, where_: where_, records, report: &report)
            } else if let other = updates.first(where: { $0.school == e.school && $0.round == e.round && $0.updateSHA256 != nil }) {
                report.problem(e.file, e.line, "\(where_): the coordinator's log line \(other.line) records a different update \(other.updateSHA256?.prefix(12) ?? "?") for this school and round")
            } else if let left = updates.first(where: { $0.school == e.school && $0.round == e.round && $0.updateSHA256 == nil }) {
                report.note(e.file, e.line, "\(where_): never stored by the coordinator, which left the school out of round \(e.round) (log line \(left.line)): \(left.reason ?? "no reason")")
            } else if aborted.contains(e.round) {
                report.note(e.file, e.line, "\(where_): not in the coordinator's log; round \(e.round) was aborted, so the update was never used")
            } else {
                report.problem(e.file, e.line, "\(where_): not in the coordinator's log")
            }
        }
        // Coordinator → school, for the schools whose logs were given.
        // A rejection without a hash records a school that sent nothing (it disconnected,
        // declined or missed the deadline); there is nothing for its log to hold.
        for r in updates where r.updateSHA256 != nil {
            guard let school = r.school, let file = fileOfSchool[school] else { continue }
            if !clientEntries.contains(where: { $0.school == school && $0.round == r.round && $0.update == r.updateSHA256 }) {
                if r.event == .updateRejected, let round = r.round, aborted.contains(round) {
                    report.note(logName, r.line, "update \(r.updateSHA256?.prefix(12) ?? "?") from school \(school) in aborted round \(round) is not in the school's own log \(file) (stored, never used)")
                    continue
                }
                report.problem(logName, r.line, "update \(r.updateSHA256?.prefix(12) ?? "?") from school \(school) in round \(r.round.map(String.init) ?? "?") is not in the school's own log \(file)")
            }
        }
        // A school the coordinator selected that no given log speaks for is said, not skipped.
        var selected = [String: (rounds: Int, line: Int)]()
        for r in records where r.event == .schoolSelected {
            guard let school = r.school else { continue }
            let seen = selected[school]
            selected[school] = ((seen?.rounds ?? 0) + 1, seen?.line ?? r.line)
        }
        for (school, s) in selected.sorted(by: { $0.key < $1.key }) where fileOfSchool[school] == nil {
            report.note(logName, s.line, "school \(school) was selected in \(s.rounds) round(s), but no school log given has an entry of it: "
                + "its updates and audit anchors are not cross-checked")
        }
    }

    /// Every version a school accepted (trained on or evaluated) must be one the coordinator's
    /// signed log creates, with the parent and round the school was told: a coordinator that
    /// served a version it never recorded, or told a school another lineage than its log
    /// states, is named at the school log's line.
    static func checkAcceptedVersions(_ versions: [ClientVersion], _ records: [AuditRecord], logName: String,
                                      report: inout VerificationReport) {
        var created = [String: [(parent: String?, round: Int?, line: Int)]]()
        for r in records {
            guard let v = r.newVersion else { continue }
            if r.event == .federationCreated { created[v, default: []].append((nil, nil, r.line)) }
            if r.event == .roundCommitted { created[v, default: []].append((r.baseVersion, r.round, r.line)) }
        }
        for v in versions {
            let what = "school \(v.school) accepted version \(v.version.prefix(12)) (parent \(v.parent?.prefix(12) ?? "none"), round \(v.round.map(String.init) ?? "none"))"
            guard let made = created[v.version] else {
                report.problem(v.file, v.line, "\(what), which no record of \(logName) creates: the coordinator served a version it did not record")
                continue
            }
            if !made.contains(where: { $0.parent == v.parent && $0.round == v.round }) {
                let first = made[0]
                report.problem(v.file, v.line, "\(what), but \(logName):\(first.line) creates it from \(first.parent?.prefix(12) ?? "nothing (the base model)")"
                    + (first.round.map { " in round \($0)" } ?? ""))
            }
        }
    }

    /// Each audit head a school logged must be a record of the coordinator's log with that
    /// hash, and not older than the round it came with (a train assignment follows its
    /// round's `roundStarted`, an evaluation its `roundCommitted`): a coordinator that rewrote
    /// its log, or sent a stale head, is named at the school log's line.
    static func checkAnchors(_ anchors: [ClientAnchor], _ records: [AuditRecord], logName: String, federation: String?,
                             report: inout VerificationReport) {
        var bySeq = [Int: AuditRecord]()
        for r in records { if let seq = r.seq, bySeq[seq] == nil { bySeq[seq] = r } }
        let last = records.last?.seq ?? 0
        func first(_ event: AuditEvent, round: Int) -> AuditRecord? { records.first { $0.event == event && $0.round == round } }
        for a in anchors {
            report.anchorsChecked += 1
            let where_ = "school \(a.school) round \(a.round) (\(a.task)): the coordinator's audit head was seq \(a.seq), hash \(a.hash.prefix(16))…"
            if let mine = a.federation, let theirs = federation, mine != theirs {
                report.problem(a.file, a.line, "\(where_), logged for federation \(mine), but the coordinator's log is of federation \(theirs)")
            }
            guard let record = bySeq[a.seq] else {
                report.problem(a.file, a.line, "\(where_), but \(logName) has no record seq \(a.seq) (it ends at \(last)): "
                    + "records were removed (or this copy of \(logName) is older than the school log)")
                continue
            }
            guard record.hash == a.hash else {
                report.problem(a.file, a.line, "\(where_), but record seq \(a.seq) (\(logName):\(record.line)) hashes to \(record.hash.prefix(16))…: "
                    + "the log was rewritten at or before that record")
                continue
            }
            let start = a.task == "evaluate" ? first(.roundCommitted, round: a.round) : first(.roundStarted, round: a.round)
            if let start, let startSeq = start.seq, a.seq < startSeq {
                report.problem(a.file, a.line, "\(where_), older than round \(a.round)'s \(start.eventName ?? "") record (seq \(startSeq)): "
                    + "the coordinator sent a stale audit head")
            } else if start == nil {
                report.problem(a.file, a.line, "\(where_), but \(logName) records no \(a.task == "evaluate" ? "commit" : "start") of round \(a.round)")
            }
        }
    }

    // MARK: checkpoints

    static func checkVersions(_ records: [AuditRecord], logName: String, folder: URL, report: inout VerificationReport) {
        let fm = FileManager.default
        let versionsDir = fm.fileExists(atPath: folder.appendingPathComponent("versions").path) ? folder.appendingPathComponent("versions") : folder
        guard let store = try? CheckpointStore(folder: versionsDir, readOnly: true) else {
            report.problem(folder.path, nil, "cannot open the checkpoint folder")
            return
        }
        let dirName = versionsDir.lastPathComponent
        // Lineage as the signed log states it.
        var known = [String: Int]()        // version → log line that created it
        var base = [String: String]()      // version → base version
        var pruned = [String: Int]()       // version → log line of its pruning
        for r in records {
            switch r.event {
            case .federationCreated:
                if let v = r.newVersion { known[v] = known[v] ?? r.line }
            case .roundCommitted:
                guard let v = r.newVersion else { report.problem(logName, r.line, "round committed without a new version"); continue }
                if let b = r.baseVersion {
                    if known[b] == nil { report.problem(logName, r.line, "round \(r.round ?? 0) was computed from version \(b.prefix(12)), which no earlier record creates") }
                    if base[v] == nil { base[v] = b }
                }
                known[v] = known[v] ?? r.line
                pruned[v] = nil
            case .versionPruned:
                if let v = r.newVersion { pruned[v] = r.line }
            case .rollback:
                if let v = r.newVersion, known[v] == nil { report.problem(logName, r.line, "rollback to version \(v.prefix(12)), which no earlier record creates") }
            default: break
            }
        }
        // The coordinator's database, when present, must agree with the signed log.
        var dbRecords = [String: VersionRecord]()
        let dbURL = versionsDir.deletingLastPathComponent().appendingPathComponent("state.sqlite")
        if fm.fileExists(atPath: dbURL.path), let ledger = try? CoordinatorLedger(folder: dbURL.deletingLastPathComponent(), readOnly: true) {
            for v in (try? ledger.versions()) ?? [] {
                dbRecords[v.id] = v
                if known[v.id] == nil {
                    report.problem("state.sqlite", nil, "version \(v.id.prefix(12)) is recorded, but no signed audit record creates it")
                } else if let b = base[v.id], v.parent != nil, v.parent != b {
                    report.problem("state.sqlite", nil, "version \(v.id.prefix(12)) has parent \(v.parent!.prefix(12)) but the signed log says \(b.prefix(12))")
                }
                if let p = v.parent, (try? ledger.version(p)) == nil {
                    report.problem("state.sqlite", nil, "version \(v.id.prefix(12)): parent \(p.prefix(12)) has no record")
                }
            }
            if let head = try? ledger.auditHead() {
                let signedCount = report.recordsChecked
                if head.count > signedCount {
                    report.problem(logName, nil, "the log has \(signedCount) records but the coordinator's state holds \(head.count): records were removed from the end")
                } else if head.count == signedCount, let h = head.lastHash, let last = records.last, last.line == signedCount, last.hash != h {
                    report.problem(logName, signedCount, "the last record differs from the coordinator's stored copy")
                }
            }
            if let head = try? ledger.head(), head.prunedAt != nil || !store.hasWeights(head.id) {
                report.problem("state.sqlite", nil, "head version \(head.id.prefix(12)) has no weights on disk")
            }
        } else if fm.fileExists(atPath: dbURL.path) {
            report.problem("state.sqlite", nil, "cannot open the coordinator's database")
        }
        // Every file on disk hashes to its id and is a recorded version.
        for id in store.storedIDs() {
            guard store.hasWeights(id) else {
                report.problem("\(dirName)/\(id)", nil, "version folder without \(CheckpointStore.weightsFile)")
                continue
            }
            report.versionFilesChecked += 1
            let path = "\(dirName)/\(id)/\(CheckpointStore.weightsFile)"
            if let actual = try? Digest.sha256(fileAt: store.weights(of: id)) {
                if actual != id { report.problem(path, nil, "SHA-256 is \(actual.prefix(12))…, not the version id: the file is corrupt or was altered") }
            } else {
                report.problem(path, nil, "cannot read")
            }
            if let files = dbRecords[id]?.files {
                for (name, hash) in files.sorted(by: { $0.key < $1.key }) where name != CheckpointStore.weightsFile {
                    let url = store.folder(of: id).appendingPathComponent(name)
                    if !fm.fileExists(atPath: url.path) { report.problem("\(dirName)/\(id)/\(name)", nil, "missing") }
                    else if (try? Digest.sha256(fileAt: url)) != hash { report.problem("\(dirName)/\(id)/\(name)", nil, "differs from the recorded hash") }
                }
            }
            if known[id] == nil { report.problem("\(dirName)/\(id)", nil, "no signed record creates this version") }
            if let line = pruned[id] { report.note("\(dirName)/\(id)", nil, "recorded as pruned at \(logName):\(line) but still on disk") }
        }
        // Every version the log creates is on disk, or recorded as pruned.
        for (id, line) in known.sorted(by: { $0.value < $1.value }) where !store.hasWeights(id) {
            if let prunedLine = pruned[id] {
                report.note("\(dirName)/\(id.prefix(12))", nil, "pruned (recorded at \(logName):\(prunedLine)); lineage kept")
            } else if dbRecords[id]?.prunedAt != nil {
                report.note("\(dirName)/\(id.prefix(12))", nil, "pruned (recorded in state.sqlite)")
            } else {
                report.problem("\(dirName)/\(id.prefix(12))", nil, "weights missing: the version created at \(logName):\(line) is not on disk and was not pruned")
            }
        }
    }
}

/// One round as `pando audit show` presents it.
public struct RoundSummary: Sendable, Equatable {
    public var round: Int
    public var schools: [String] = []
    public var rejected: [String] = []
    public var examples = 0
    public var strategy: String?
    public var baseVersion: String?
    public var newVersion: String?
    /// committed, aborted, or in flight.
    public var outcome = "in flight"
    public var reason: String?
    public var privacy: [String: CanonicalJSON]?
    /// Each school's reported ε over all its rounds so far, from its update's privacy record.
    public var schoolEpsilon: [String: Double] = [:]
    /// A secure round's protocol record (`secureAggregation`), when the round had one.
    public var secureAggregation: [String: CanonicalJSON]?
    public var startedAt: String?
    public var endedAt: String?

    /// Rounds from audit records, in round order.
    public static func from(_ records: [AuditRecord]) -> [RoundSummary] {
        var rounds = [Int: RoundSummary]()
        for r in records {
            guard let n = r.round else { continue }
            var s = rounds[n] ?? RoundSummary(round: n)
            switch r.event {
            case .roundStarted:
                s.strategy = r.strategy; s.baseVersion = r.baseVersion; s.startedAt = r.time
            case .updateReceived:
                if let school = r.school, !s.schools.contains(school) { s.schools.append(school) }
                if s.outcome != "committed" { s.examples += r.examples ?? 0 }
                if let school = r.school, let e = r.privacy?["epsilonTotal"]?.doubleValue { s.schoolEpsilon[school] = e }
            case .updateRejected:
                if let school = r.school { s.rejected.append(school) }
            case .roundCommitted:
                s.outcome = "committed"; s.newVersion = r.newVersion; s.baseVersion = r.baseVersion ?? s.baseVersion
                if let by = r.examplesBySchool {
                    s.examples = by.values.reduce(0, +)
                    s.schools = by.keys.sorted()
                }
                s.privacy = r.privacy; s.endedAt = r.time
                s.strategy = r.strategy ?? s.strategy
            case .roundAborted:
                s.outcome = "aborted"; s.reason = r.reason; s.endedAt = r.time
            case .secureAggregation:
                s.secureAggregation = r.secureAggregation
            default: break
            }
            rounds[n] = s
        }
        return rounds.keys.sorted().map { rounds[$0]! }
    }

    /// JSON for tools.
    public var json: CanonicalJSON {
        var o: [String: CanonicalJSON] = ["round": .int(round), "schools": .array(schools.map { .string($0) }),
                                          "rejected": .array(rejected.map { .string($0) }), "examples": .int(examples),
                                          "outcome": .string(outcome)]
        if let strategy { o["strategy"] = .string(strategy) }
        if let baseVersion { o["baseVersion"] = .string(baseVersion) }
        if let newVersion { o["newVersion"] = .string(newVersion) }
        if let reason { o["reason"] = .string(reason) }
        if let privacy { o["privacy"] = .object(privacy) }
        if !schoolEpsilon.isEmpty { o["schoolEpsilon"] = .object(schoolEpsilon.mapValues { .double($0) }) }
        if let secureAggregation { o["secureAggregation"] = .object(secureAggregation) }
        if let startedAt { o["startedAt"] = .string(startedAt) }
        if let endedAt { o["endedAt"] = .string(endedAt) }
        return .object(o)
    }
}
