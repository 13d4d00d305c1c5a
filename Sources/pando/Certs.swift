import ArgumentParser
import Foundation
import PandoCertificates
import PandoLedger
import PandoServices

/// `pando certs …`: the district's certificate authority for mutual TLS.
struct CertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "District CA, coordinator and school certificates, revocation (CRL).",
        discussion: "Private keys are written with mode 0600 and never printed. See certs/README.md.",
        subcommands: [Init.self, IssueCoordinator.self, IssueSchool.self, Revoke.self, RefreshCRL.self, List.self])

    struct Folder: ParsableArguments {
        @Option(name: .long, help: "Certificate folder (keep it private; it holds the CA key).")
        var dir: String = "certs/generated"
        var url: URL { URL(fileURLWithPath: dir) }
        func open() throws -> CertificateAuthority {
            do { return try CertificateAuthority(directory: url) } catch let e as CertificateError {
                throw CertsError(message: e.description)
            }
        }

        /// Opens the CA for a command that changes it, with its event log (`ca-events.jsonl`,
        /// held until `finish`), first catching the log up with what the CA already holds.
        func openForChange() throws -> (CertificateAuthority, CAEventLog) {
            let ca = try open()
            let log = try wrap { try CertificateEvents.open(ca) }
            if let repaired = log.recovery { FileHandle.standardError.write(Data("warning: \(repaired)\n".utf8)) }
            let late = try wrap { try CertificateEvents.record(ca, in: log, late: true) }
            if late > 0 { print("recorded \(late) earlier certificate event(s) the CA log lacked in \(log.url.path)") }
            return (ca, log)
        }
    }

    /// Writes what a command did to the CA's event log.
    static func finish(_ ca: CertificateAuthority, _ log: CAEventLog) throws {
        let n = try wrap { try CertificateEvents.record(ca, in: log) }
        print("CA log: \(n) event(s) recorded in \(log.url.path)")
        log.close()
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create the district CA and an empty revocation list.")
        @OptionGroup var folder: Folder
        @Option(name: .long, help: "District name (goes into the CA's subject).")
        var district: String = "School District"
        @Option(name: .long, help: "CA validity in days.")
        var days: Int = 3650

        func run() throws {
            let ca = try wrap { try CertificateAuthority.initialise(at: folder.url, districtName: district, validityDays: days) }
            print("district CA created: \(ca.caPath.path) (key: ca-key.pem, mode 0600 — keep it offline if you can)")
            print("revocation list:     \(ca.crlPath.path)")
            try CertsCommand.finish(ca, try wrap { try CertificateEvents.open(ca) })
            print("next: pando certs issue-coordinator --host <coordinator DNS name>")
        }
    }

    struct IssueCoordinator: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue-coordinator",
            abstract: "Issue the coordinator's server certificate (revokes any earlier coordinator certificate).")
        @OptionGroup var folder: Folder
        @Option(name: .customLong("host"), help: "DNS name or IP schools dial (repeat for several).")
        var hosts: [String] = []
        @Option(name: .long, help: "Validity in days.")
        var days: Int = 825

        func run() throws {
            let (ca, log) = try folder.openForChange()
            let previous = try wrap { try ca.list().filter { $0.kind == "coordinator" && $0.revokedAt == nil }.map(\.serial) }
            let cert = try wrap { try ca.issueCoordinator(hosts: hosts, validityDays: days) }
            try CertsCommand.finish(ca, log)
            let dir = CertificateAuthority.coordinatorDirectory(folder.url)
            print("coordinator certificate for \(hosts.joined(separator: ", ")) serial \(PandoIdentity.hex(cert.serialNumber))")
            print("files: \(dir.path)/{coordinator.pem, coordinator-key.pem, ca.pem}")
            if !previous.isEmpty {
                print("revoked the previous coordinator certificate(s): \(previous.joined(separator: ", "))")
                print("CRL updated: \(ca.crlPath.path); give every school the new crl.pem (also copied into schools/<ID>/crl.pem)")
            }
        }
    }

    struct IssueSchool: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue-school", abstract: "Issue a school's client certificate (identity: SAN URI pando://school/ID).")
        @OptionGroup var folder: Folder
        @Argument(help: "School ID: 1–64 of A–Z a–z 0–9 . _ - (e.g. lincoln-high).")
        var id: String
        @Option(name: .long, help: "Validity in days.")
        var days: Int = 825
        @Flag(name: .long, help: "Revoke the school's current certificate and issue a new one.")
        var replace = false

        func run() throws {
            let (ca, log) = try folder.openForChange()
            let cert = try wrap { try ca.issueSchool(id: id, validityDays: days, replace: replace) }
            try CertsCommand.finish(ca, log)
            let dir = CertificateAuthority.schoolDirectory(folder.url, id: id)
            print("school \(id): serial \(PandoIdentity.hex(cert.serialNumber)), valid until \(ISO8601DateFormatter().string(from: cert.notValidAfter))")
            print("give the school this folder (over a private channel): \(dir.path)/{school.pem, school-key.pem, ca.pem, crl.pem}")
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a school's certificate(s); the coordinator refuses them from its next handshake, no restart.")
        @OptionGroup var folder: Folder
        @Argument(help: "School ID.")
        var id: String

        func run() throws {
            let (ca, log) = try folder.openForChange()
            let serials = try wrap { try ca.revoke(schoolID: id) }
            try CertsCommand.finish(ca, log)
            print("revoked school \(id): serial(s) \(serials.joined(separator: ", "))")
            print("CRL updated: \(ca.crlPath.path) (copy it to the coordinator if it runs elsewhere)")
        }
    }

    struct RefreshCRL: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "refresh-crl",
            abstract: "Republish crl.pem with a new number and a fresh year of validity.",
            discussion: "The coordinator refuses every school once its CRL is past its nextUpdate (it warns 30 days ahead). Run this well within the year and copy crl.pem to the coordinator if it runs elsewhere.")
        @OptionGroup var folder: Folder

        func run() throws {
            let (ca, log) = try folder.openForChange()
            let crl = try wrap { try ca.refreshCRL() }
            try CertsCommand.finish(ca, log)
            print("CRL \(crl.number) published: \(ca.crlPath.path), \(crl.entries.count) revoked, valid until \(ISO8601DateFormatter().string(from: crl.nextUpdate))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List issued certificates.")
        @OptionGroup var folder: Folder
        @Flag(name: .long, help: "JSON output.")
        var json = false

        func run() throws {
            let entries = try wrap { try folder.open().list() }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                enc.dateEncodingStrategy = .iso8601
                print(String(decoding: try enc.encode(entries), as: UTF8.self))
                return
            }
            let fmt = ISO8601DateFormatter()
            let now = Date()
            print("KIND         NAME                             STATUS    EXPIRES               SERIAL")
            for e in entries {
                let status = e.revokedAt != nil ? "revoked" : (e.notAfter < now ? "expired" : "valid")
                print("\(pad(e.kind, 12)) \(pad(e.name, 32)) \(pad(status, 9)) \(pad(fmt.string(from: e.notAfter), 21)) \(e.serial)")
            }
        }

        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    }
}

/// Printed as `Error: <message>` without the usage text.
struct CertsError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

private func wrap<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as CertificateError { throw CertsError(message: e.description) } catch let e as LedgerError {
        throw CertsError(message: e.description)
    }
}
