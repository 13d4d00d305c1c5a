import ArgumentParser
import Foundation
import PandoFederation
import PandoLedger
import PandoServices

/// `pando audit …`: the privacy officer's tools over the signed audit log.
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify and read the coordinator's signed, hash-chained audit log.",
        subcommands: [Verify.self, Show.self, ExportKey.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the hash chain and every signature; cross-check school logs; check checkpoint files and lineage. Exit 0 if all is well, 1 if not.")
        @Option(help: "The coordinator's audit log (audit.jsonl).") var log: String
        @Option(name: .customLong("key"), help: ArgumentHelp(
            "The coordinator's Ed25519 public key file (base64 or hex). Repeat it for a log that spans a key replacement (--new-signing-key): the old key and the new one.",
            valueName: "key")) var keys: [String] = []
        @Option(name: .customLong("client-log"), help: "A school's own log of what it sent (repeatable).") var clientLogs: [String] = []
        @Option(help: "The coordinator's state folder (or its versions/ folder): check each version file's hash and lineage.") var checkpoints: String?
        @Option(help: ArgumentHelp("Where the last verification ended (its report's last line): the log must still hold exactly that record.",
                                   valueName: "seq:hash")) var since: String?
        @Option(name: .customLong("ca-log"), help: "The district CA's event log (certs/generated/ca-events.jsonl): check its chain and CA signatures, and the schools in the audit log against it.")
        var caLog: String?
        @Option(name: .customLong("ca-cert"), help: "The district CA's certificate whose key signs --ca-log (default: ca.pem beside it).")
        var caCert: String?
        @Flag(help: "Print the findings as JSON.") var json = false

        func run() throws {
            guard !keys.isEmpty else { throw ValidationError("give the coordinator's public key with --key") }
            let publicKeys: [AuditPublicKey]
            do { publicKeys = try keys.map { try AuditPublicKey.load(from: URL(fileURLWithPath: $0)) } } catch { throw ValidationError("\(error)") }
            guard FileManager.default.fileExists(atPath: log) else { throw ValidationError("\(log): no such file") }
            for file in clientLogs where !FileManager.default.fileExists(atPath: file) { throw ValidationError("\(file): no such file") }
            let position = try since.map { text -> AuditPosition in
                guard let p = AuditPosition(text) else { throw ValidationError("--since \(text): expected SEQ:HASH (a record number and its 64-digit hex hash)") }
                return p
            }
            let certificates = try caLog.map { path -> AuditVerifier.CertificateLog in
                let url = URL(fileURLWithPath: path)
                guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("\(path): no such file") }
                let cert = caCert.map { URL(fileURLWithPath: $0) } ?? url.deletingLastPathComponent().appendingPathComponent("ca.pem")
                do { return AuditVerifier.CertificateLog(url: url, key: try CertificateEvents.verifyingKey(caCertificate: cert)) } catch {
                    throw ValidationError("\(error)")
                }
            }
            let report = AuditVerifier.verify(log: URL(fileURLWithPath: log), keys: publicKeys,
                                              clientLogs: clientLogs.map { URL(fileURLWithPath: $0) },
                                              checkpoints: checkpoints.map { URL(fileURLWithPath: $0) }, since: position,
                                              certificates: certificates, privacy: PrivacyAccounting.recordedEpsilon)
            if json {
                print(report.json.terminalSafeDescription)
            } else {
                print(report.render(), terminator: "")
            }
            if !report.isValid { throw ExitCode(1) }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rounds as a table: schools, examples, strategy, base → new version, outcome. Does not verify; use `audit verify`.")
        @Option(help: "The coordinator's audit log (audit.jsonl).") var log: String
        @Flag(help: "Print JSON for tools.") var json = false
        @Flag(help: "Also list every record (time, event, school, hashes).") var events = false

        func run() throws {
            let (records, unreadable) = try AuditRecord.readAll(URL(fileURLWithPath: log))
            if !unreadable.isEmpty {
                FileHandle.standardError.write(Data("warning: \(log): \(unreadable.count) unreadable line(s) skipped (first: line \(unreadable[0])); run `pando audit verify`\n".utf8))
            }
            let rounds = RoundSummary.from(records)
            if json {
                print(CanonicalJSON.array(rounds.map(\.json)).terminalSafeDescription)
                return
            }
            var rows = [["round", "schools", "examples", "strategy", "base → new", "outcome"]]
            for r in rounds {
                let schools = r.schools.count <= 3 ? r.schools.joined(separator: ",") : "\(r.schools.count) schools"
                let rejected = r.rejected.isEmpty ? "" : " (\(r.rejected.count) rejected)"
                let versions = "\(r.baseVersion.map { String($0.prefix(8)) } ?? "?") → \(r.newVersion.map { String($0.prefix(8)) } ?? "-")"
                var outcome = r.outcome + (r.reason.map { ": \($0)" } ?? "")
                if let eps = r.privacy?["epsilon"] { outcome += " ε=\(eps)" }
                if let worst = r.schoolEpsilon.values.max() {
                    outcome += String(format: " DP: ε ≤ %.3g per school so far (%@)", worst,
                                      r.schoolEpsilon.keys.sorted().map { String(format: "%@ %.3g", $0, r.schoolEpsilon[$0]!) }.joined(separator: ", "))
                }
                if let sa = r.secureAggregation {
                    let summed = sa["contributors"]?.arrayValue?.count ?? 0, n = sa["roster"]?.arrayValue?.count ?? 0
                    let dropped = (sa["dropped"]?.objectValue ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) at \($0.value.stringValue ?? "?")" }
                    outcome += " secure aggregation: sum of \(summed) of \(n), t=\(sa["threshold"]?.intValue ?? 0)"
                        + (dropped.isEmpty ? "" : ", left: " + dropped.joined(separator: ", "))
                }
                rows.append(["\(r.round)", (schools.isEmpty ? "-" : schools) + rejected, "\(r.examples)", r.strategy ?? "-", versions, outcome])
            }
            print(renderTable(rows), terminator: "")
            let others = records.filter { [.rollback, .certificateIssued, .certificateRevoked, .versionPruned, .versionTagged, .connectionRefused,
                                           .signingKeyReplaced].contains($0.event) }
            if !others.isEmpty {
                print("")
                for r in others {
                    var parts = [String]()
                    if let school = r.school { parts.append(school) }
                    if let serial = r.certificateSerial { parts.append("serial \(serial)") }
                    if let base = r.baseVersion { parts.append(String(base.prefix(8)) + " →") }
                    if let new = r.newVersion { parts.append(String(new.prefix(8))) }
                    if let tag = r.tag { parts.append("tag " + tag) }
                    if let key = r.publicKeySHA256 { parts.append("new key " + String(key.prefix(16))) }
                    if let reason = r.reason { parts.append("(\(reason))") }
                    print(TerminalText.safe("\(r.time ?? "?")  \(r.eventName ?? "?")  \(parts.joined(separator: " "))"))
                }
            }
            if events {
                print("")
                var rows = [["line", "time", "event", "round", "school", "update", "examples", "bytes"]]
                for r in records {
                    let round: String = r.round.map { String($0) } ?? ""
                    let update: String = r.updateSHA256.map { String($0.prefix(12)) } ?? ""
                    let examples: String = r.examples.map { String($0) } ?? ""
                    let bytes: String = r.wireBytes.map { String($0) } ?? ""
                    let row: [String] = [String(r.line), r.time ?? "", r.eventName ?? "", round, r.school ?? "", update, examples, bytes]
                    rows.append(row)
                }
                print(renderTable(rows), terminator: "")
            }
        }
    }

    struct ExportKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export-key",
            abstract: "Print (or write) the coordinator's audit public key for officers. Never prints the private key.")
        @Option(help: "The coordinator's state folder.") var store: String?
        @Option(help: "Private key file (default: <store>/keys/coordinator.key).") var key: String?
        @Option(help: "Write the public key to this file instead of printing it.") var out: String?

        func run() throws {
            guard let keyPath = key ?? store.map({ CoordinatorLedger.defaultKeyURL(in: URL(fileURLWithPath: $0)).path }) else {
                throw ValidationError("give --store or --key")
            }
            let publicKey = try CoordinatorSigningKey.load(from: URL(fileURLWithPath: keyPath)).publicKey
            if let out {
                try publicKey.save(to: URL(fileURLWithPath: out))
                print("wrote \(out) (fingerprint \(publicKey.fingerprint))")
            } else {
                print(publicKey.base64)
            }
        }
    }
}
