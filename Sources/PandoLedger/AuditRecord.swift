import Foundation

/// What an audit record reports.
public enum AuditEvent: String, Sendable, CaseIterable {
    case federationCreated, roundStarted, schoolSelected, updateReceived, updateRejected
    case roundCommitted, roundAborted, certificateIssued, certificateRevoked
    case rollback, versionTagged, versionPruned
    /// A connection refused during TLS (certificate not accepted, or no acceptable handshake);
    /// `reason` says why and from which address.
    case connectionRefused
    /// A school's federated-evaluation result left out of the combined metrics (`reason`:
    /// an impossible metric value or example count).
    case evaluationRejected
    /// The coordinator's signing key was lost and replaced (`--new-signing-key`): this record
    /// and every later one are signed by the key whose public key hashes to `publicKeySHA256`.
    case signingKeyReplaced
    /// The district CA published a CRL (`crlNumber`): written to the CA's own log, `ca-events.jsonl`.
    case crlPublished
    /// A secure-aggregation round closed (`secureAggregation`: t, n, the schools at each stage,
    /// where each one left, the hashes of the keys they advertised); before its commit or abort.
    case secureAggregation
}

/// The facts of one audit event, as the coordinator supplies them.
///
/// Only identifiers, hashes and numbers: there is deliberately no field that
/// could hold a training example. `reason` is the coordinator's own message
/// (validator verdict, abort cause) and is cut to 300 bytes.
public struct AuditEntry: Sendable, Equatable {
    public var event: AuditEvent
    public var round: Int?
    /// School identity, taken from its certificate.
    public var school: String?
    public var baseVersion: String?
    public var newVersion: String?
    /// This school's example count (update events), as it reported it.
    public var examples: Int?
    /// The weight the update got in the average when the coordinator capped it below `examples`.
    public var weight: Int?
    /// Example count per school (round committed).
    public var examplesBySchool: [String: Int]?
    public var updateSHA256: String?
    public var updateL2Norm: Double?
    /// Bytes of the update as transferred.
    public var wireBytes: Int?
    public var strategy: String?
    public var strategyParameters: [String: CanonicalJSON]?
    /// Differential-privacy parameters (ε, δ, noise multiplier, clip …) when applied.
    public var privacy: [String: CanonicalJSON]?
    /// With `secureAggregation` records: who took part at each stage, t, n and the key hashes.
    public var secureAggregation: [String: CanonicalJSON]?
    public var certificateSerial: String?
    public var reason: String?
    public var tag: String?
    /// `signingKeyReplaced`: hex SHA-256 of the new Ed25519 public key's 32 raw bytes.
    public var publicKeySHA256: String?
    /// Certificate events of the CA's log: `ca`, `coordinator` or `school`; the certificate's
    /// name (the school id, the coordinator's hosts, the district); its validity; when it was revoked.
    public var certificateKind: String?
    public var subject: String?
    public var notBefore: String?
    public var notAfter: String?
    public var revokedAt: String?
    /// `crlPublished`: the CRL's number.
    public var crlNumber: Int?

    public init(event: AuditEvent, round: Int? = nil, school: String? = nil, baseVersion: String? = nil, newVersion: String? = nil,
                examples: Int? = nil, examplesBySchool: [String: Int]? = nil, updateSHA256: String? = nil, updateL2Norm: Double? = nil,
                wireBytes: Int? = nil, strategy: String? = nil, strategyParameters: [String: CanonicalJSON]? = nil,
                privacy: [String: CanonicalJSON]? = nil, certificateSerial: String? = nil, reason: String? = nil, tag: String? = nil,
                publicKeySHA256: String? = nil) {
        self.event = event; self.round = round; self.school = school; self.baseVersion = baseVersion; self.newVersion = newVersion
        self.examples = examples; self.examplesBySchool = examplesBySchool; self.updateSHA256 = updateSHA256
        self.updateL2Norm = updateL2Norm; self.wireBytes = wireBytes; self.strategy = strategy
        self.strategyParameters = strategyParameters; self.privacy = privacy; self.certificateSerial = certificateSerial
        self.reason = reason; self.tag = tag; self.publicKeySHA256 = publicKeySHA256
    }

    /// The record's fields (without `v`, `seq`, `prev`, `time`, `signature`).
    var fields: [String: CanonicalJSON] {
        var f: [String: CanonicalJSON] = ["event": .string(event.rawValue)]
        if let round { f["round"] = .int(round) }
        if let school { f["school"] = .string(school) }
        if let baseVersion { f["baseVersion"] = .string(baseVersion) }
        if let newVersion { f["newVersion"] = .string(newVersion) }
        if let examples { f["examples"] = .int(examples) }
        if let weight { f["weight"] = .int(weight) }
        if let examplesBySchool { f["examplesBySchool"] = .object(examplesBySchool.mapValues { .int($0) }) }
        if let updateSHA256 { f["updateSHA256"] = .string(updateSHA256) }
        if let updateL2Norm { f["updateL2Norm"] = .double(updateL2Norm) }
        if let wireBytes { f["wireBytes"] = .int(wireBytes) }
        if let strategy { f["strategy"] = .string(strategy) }
        if let strategyParameters { f["strategyParameters"] = .object(strategyParameters) }
        if let privacy { f["privacy"] = .object(privacy) }
        if let secureAggregation { f["secureAggregation"] = .object(secureAggregation) }
        if let certificateSerial { f["certificateSerial"] = .string(certificateSerial) }
        if let reason { f["reason"] = .string(Self.cut(reason, to: 300)) }
        if let tag { f["tag"] = .string(tag) }
        if let publicKeySHA256 { f["publicKeySHA256"] = .string(publicKeySHA256) }
        if let certificateKind { f["certificateKind"] = .string(certificateKind) }
        if let subject { f["subject"] = .string(Self.cut(subject, to: 300)) }
        if let notBefore { f["notBefore"] = .string(notBefore) }
        if let notAfter { f["notAfter"] = .string(notAfter) }
        if let revokedAt { f["revokedAt"] = .string(revokedAt) }
        if let crlNumber { f["crlNumber"] = .int(crlNumber) }
        return f
    }

    static func cut(_ s: String, to bytes: Int) -> String {
        guard s.utf8.count > bytes else { return s }
        var out = ""
        for ch in s where out.utf8.count + ch.utf8.count <= bytes { out.append(ch) }
        return out
    }
}

/// The audit log's line format and its sealing.
///
/// Each line of the JSON Lines file is one record: a JSON object in the
/// canonical encoding of `CanonicalJSON`, followed by `\n`. Fields:
/// `v` (format, 1), `seq` (1, 2, 3 … with no gaps), `prev` (hex SHA-256 of the
/// previous record's *signed bytes*; 64 zeros for the first), `time` (UTC,
/// ISO 8601 with milliseconds), `federation`, `event`, the event's facts
/// (see `AuditEntry`), and `signature`.
///
/// The *signed bytes* of a record are the canonical encoding of the record's
/// object with the `signature` member removed. `signature` is the base64
/// Ed25519 signature of those bytes by the coordinator's key. A verifier parses
/// a line (keeping numbers' text), removes `signature`, re-encodes canonically,
/// checks the signature over those bytes and hashes them for the next `prev`.
public enum AuditFormat {
    public static let version = 1

    /// A sealed record: the line to append (with newline) and the hash of its
    /// signed bytes (the next record's `prev`).
    public struct Sealed: Sendable {
        public let seq: Int
        public let line: Data
        public let hash: String
    }

    /// Builds, signs and encodes record `seq` for `entry`.
    public static func seal(_ entry: AuditEntry, seq: Int, prev: String, time: Date, federation: String?,
                            key: some RecordSigner) throws -> Sealed {
        var object = entry.fields
        object["time"] = .string(timestamp(time))
        if let federation { object["federation"] = .string(federation) }
        return try seal(object, seq: seq, prev: prev, key: key)
    }

    /// Signs `object` (an event's fields with `time`) as record `seq` after `prev`.
    static func seal(_ fields: [String: CanonicalJSON], seq: Int, prev: String, key: some RecordSigner) throws -> Sealed {
        var object = fields
        object["v"] = .int(version)
        object["seq"] = .int(seq)
        object["prev"] = .string(prev)
        object.removeValue(forKey: "signature")
        let signed = CanonicalJSON.object(object).encoded
        object["signature"] = .string(try key.sign(signed).base64EncodedString())
        var line = CanonicalJSON.object(object).encoded
        line.append(0x0A)
        return Sealed(seq: seq, line: line, hash: Digest.sha256(signed))
    }

    /// The log an operator holding the signing key could write instead: `records` (edited,
    /// some dropped) re-numbered, re-chained and re-signed. Every line verifies on its own;
    /// what catches it is outside the coordinator (the schools' anchors, an officer's `--since`).
    /// For tests and officers' drills.
    public static func resealed(_ records: [[String: CanonicalJSON]], key: some RecordSigner) throws -> Data {
        var out = Data()
        var prev = Digest.zero
        for (i, object) in records.enumerated() {
            let sealed = try seal(object, seq: i + 1, prev: prev, key: key)
            out.append(sealed.line)
            prev = sealed.hash
        }
        return out
    }

    /// UTC ISO 8601 with milliseconds, e.g. `2026-11-22T22:07:17.123Z`.
    public static func timestamp(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }

    /// Splits a JSON Lines file into (line number, bytes without newline).
    /// `complete` is false when the file does not end with a newline (its last
    /// line is then partial, e.g. cut by a crash).
    public static func lines(of data: Data) -> (lines: [(number: Int, bytes: Data)], complete: Bool) {
        var result = [(Int, Data)]()
        var start = data.startIndex
        var number = 1
        for i in data.indices where data[i] == 0x0A {
            result.append((number, data.subdata(in: start..<i)))
            number += 1
            start = i + 1
        }
        let complete = start == data.endIndex
        if !complete { result.append((number, data.subdata(in: start..<data.endIndex))) }
        return (result, complete)
    }
}

/// One parsed audit record.
public struct AuditRecord: Sendable {
    /// 1-based line number in its file.
    public let line: Int
    public let object: [String: CanonicalJSON]
    /// Canonical bytes without the signature (what was signed and hashed).
    public let signedBytes: Data

    /// Parses a line; throws when it is not a JSON object.
    public init(line: Int, bytes: Data) throws {
        guard case .object(let object) = try CanonicalJSON.parse(bytes) else { throw LedgerError("not a JSON object") }
        self.line = line
        self.object = object
        var unsigned = object
        unsigned.removeValue(forKey: "signature")
        signedBytes = CanonicalJSON.object(unsigned).encoded
    }

    public var hash: String { Digest.sha256(signedBytes) }
    public var seq: Int? { object["seq"]?.intValue }
    public var prev: String? { object["prev"]?.stringValue }
    public var time: String? { object["time"]?.stringValue }
    public var eventName: String? { object["event"]?.stringValue }
    public var event: AuditEvent? { eventName.flatMap(AuditEvent.init(rawValue:)) }
    public var round: Int? { object["round"]?.intValue }
    public var school: String? { object["school"]?.stringValue }
    public var baseVersion: String? { object["baseVersion"]?.stringValue }
    public var newVersion: String? { object["newVersion"]?.stringValue }
    public var examples: Int? { object["examples"]?.intValue }
    public var examplesBySchool: [String: Int]? { object["examplesBySchool"]?.objectValue?.compactMapValues(\.intValue) }
    public var updateSHA256: String? { object["updateSHA256"]?.stringValue }
    public var updateL2Norm: Double? { object["updateL2Norm"]?.doubleValue }
    public var wireBytes: Int? { object["wireBytes"]?.intValue }
    public var strategy: String? { object["strategy"]?.stringValue }
    public var strategyParameters: [String: CanonicalJSON]? { object["strategyParameters"]?.objectValue }
    public var privacy: [String: CanonicalJSON]? { object["privacy"]?.objectValue }
    public var secureAggregation: [String: CanonicalJSON]? { object["secureAggregation"]?.objectValue }
    public var reason: String? { object["reason"]?.stringValue }
    public var weight: Int? { object["weight"]?.intValue }
    /// `roundCommitted`: each accepted school's reported example count.
    public var tag: String? { object["tag"]?.stringValue }
    public var publicKeySHA256: String? { object["publicKeySHA256"]?.stringValue }
    public var certificateSerial: String? { object["certificateSerial"]?.stringValue }
    public var certificateKind: String? { object["certificateKind"]?.stringValue }
    public var notAfter: String? { object["notAfter"]?.stringValue }
    public var revokedAt: String? { object["revokedAt"]?.stringValue }
    public var crlNumber: Int? { object["crlNumber"]?.intValue }
    public var signature: Data? { object["signature"]?.stringValue.flatMap { Data(base64Encoded: $0) } }

    /// Reads every record of a log file; lines that do not parse are skipped
    /// and their numbers returned, so a caller can say so.
    public static func readAll(_ url: URL) throws -> (records: [AuditRecord], unreadableLines: [Int]) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw LedgerError("\(url.path): cannot read") }
        var records: [AuditRecord] = [], unreadable: [Int] = []
        for line in AuditFormat.lines(of: data).lines {
            if let record = try? AuditRecord(line: line.number, bytes: line.bytes) { records.append(record) } else { unreadable.append(line.number) }
        }
        return (records, unreadable)
    }
}
