import Foundation
import PandoCertificates
import PandoLedger

/// Certificate events are audited (issue 17, item 11): every `pando certs` command that
/// changes the CA (`init`, `issue-school`, `issue-coordinator`, `revoke`, `refresh-crl`)
/// writes what it did to the CA's own signed log, `ca-events.jsonl` in the certificate
/// folder (`CAEventLog`), which `pando audit verify --ca-log` checks.
///
/// What to write is read from the CA's state rather than told by each command: a
/// `certificateIssued` for every certificate in `issued.json` the log lacks, a
/// `certificateRevoked` for every revocation it lacks, a `crlPublished` when `crl.pem`'s
/// number is above the last one logged. So a command interrupted between its change and its
/// record, or a CA folder older than its log, is caught up by the next command, and those
/// records say they were written late.
public enum CertificateEvents {
    /// Signs CA log records with the CA's key.
    struct Signer: RecordSigner {
        let ca: CertificateAuthority
        func sign(_ data: Data) throws -> Data { try ca.signRecord(data) }
    }

    /// The signer for `ca`'s event log.
    public static func signer(for ca: CertificateAuthority) -> some RecordSigner { Signer(ca: ca) }

    /// Opens `ca`'s event log (held, one command at a time, until closed).
    public static func open(_ ca: CertificateAuthority) throws -> CAEventLog {
        try CAEventLog(folder: ca.directory)
    }

    /// Appends what `log` lacks of `ca`'s state; `late` marks the records as found at the start of
    /// a command (not made by it). Returns the number of records written.
    @discardableResult
    public static func record(_ ca: CertificateAuthority, in log: CAEventLog, late: Bool = false, now: Date = Date()) throws -> Int {
        let signer = Signer(ca: ca)
        let note = late ? "recorded late: in issued.json but not in this log (a CA folder older than its log, or a command interrupted before its record)" : nil
        var logged = Set(log.records.filter { $0.event == .certificateIssued }.compactMap(\.certificateSerial))
        var revoked = Set(log.records.filter { $0.event == .certificateRevoked }.compactMap(\.certificateSerial))
        let before = log.records.count
        let certificates = try ca.list()
        for c in certificates where !logged.contains(c.serial) {
            var entry = certificateEntry(.certificateIssued, c, reason: note)
            entry.notBefore = AuditFormat.timestamp(c.notBefore)
            entry.notAfter = AuditFormat.timestamp(c.notAfter)
            try log.append(entry, signer: signer, time: now)
            logged.insert(c.serial)
        }
        for c in certificates.sorted(by: { ($0.revokedAt ?? .distantPast) < ($1.revokedAt ?? .distantPast) }) {
            guard let at = c.revokedAt, !revoked.contains(c.serial) else { continue }
            var entry = certificateEntry(.certificateRevoked, c, reason: note)
            entry.revokedAt = AuditFormat.timestamp(at)
            try log.append(entry, signer: signer, time: now)
            revoked.insert(c.serial)
        }
        if let crl = try? ca.currentCRL(), crl.number > (log.records.compactMap(\.crlNumber).max() ?? 0) {
            var entry = AuditEntry(event: .crlPublished, reason: note)
            entry.crlNumber = crl.number
            entry.notAfter = AuditFormat.timestamp(crl.nextUpdate)
            try log.append(entry, signer: signer, time: now)
        }
        return log.records.count - before
    }

    static func certificateEntry(_ event: AuditEvent, _ c: CertificateAuthority.Issued, reason: String?) -> AuditEntry {
        var entry = AuditEntry(event: event, school: c.kind == "school" ? c.name : nil, certificateSerial: c.serial, reason: reason)
        entry.certificateKind = c.kind
        entry.subject = c.name
        return entry
    }

    /// The CA's public key from its certificate (`ca.pem`), to check the CA's event log.
    public static func verifyingKey(caCertificate url: URL) throws -> CAPublicKey {
        try CAPublicKey(x963: CertificateAuthority.publicKey(ofCertificateAt: url))
    }
}
