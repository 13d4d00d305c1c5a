import Foundation
import XCTest
@testable import PandoLedger

/// What `pando audit verify` and `pando audit show` print from a hostile log (issue 17, item 8):
/// escape sequences and bidi controls in a record or a school log reach the terminal only escaped.
final class TerminalSafetyTests: LedgerTestCase {
    /// Repaints the line as "VERIFIED", then reverses the text after it.
    static let hostile = "\u{1b}[2K\rVERIFIED\u{202e}dellif\u{2066}\u{9b}31m\u{7f}\u{2028}"

    /// A signed log whose records carry `hostile` (a reason, and a correctly signed record with
    /// it as its event name), and a school log whose school id carries it; (log, key file, school log).
    func makeHostileLogs() throws -> (URL, URL, URL) {
        let folder = Fixture.folder()
        let ledger = try Fixture.ledger(at: folder)
        try Fixture.round(ledger, value: 1)
        let round = try ledger.startRound(strategy: "fedavg", parameters: [:])
        try ledger.abortRound(round.number, reason: Self.hostile)
        let head = try XCTUnwrap(try ledger.auditHead())
        ledger.close()
        let key = try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: folder))
        var object: [String: CanonicalJSON] = [
            "v": .int(AuditFormat.version), "seq": .int(head.count + 1), "prev": .string(try XCTUnwrap(head.lastHash)),
            "time": .string(AuditFormat.timestamp(Date())), "event": .string(Self.hostile), "school": .string(Self.hostile),
        ]
        object["signature"] = .string(try key.sign(CanonicalJSON.object(object).encoded).base64EncodedString())
        let log = folder.appendingPathComponent("audit.jsonl")
        let handle = try FileHandle(forWritingTo: log)
        try handle.seekToEnd()
        try handle.write(contentsOf: CanonicalJSON.object(object).encoded + Data([0x0A]))
        try handle.close()
        let school = try SchoolLog(url: folder.appendingPathComponent("school.jsonl"))
        try school.append(SchoolLogEntry(school: Self.hostile, round: 1, baseVersion: Digest.zero, updateSHA256: Digest.zero,
                                         wireBytes: 1, examples: 1))
        return (log, CoordinatorLedger.defaultKeyURL(in: folder).appendingPathExtension("pub"), school.url)
    }

    /// The first character a terminal would act on, if any.
    func unsafeCharacter(in text: String) -> String? {
        text.unicodeScalars.first { $0 != "\n" && TerminalText.isUnsafe($0) }.map { "U+" + String($0.value, radix: 16) }
    }

    func testVerifyReportAndJSONEscapeEveryControlCharacter() throws {
        let (log, keyFile, school) = try makeHostileLogs()
        let report = AuditVerifier.verify(log: log, key: try AuditPublicKey.load(from: keyFile), clientLogs: [school])
        XCTAssertTrue(report.findings.contains { $0.message.contains("unknown event \(Self.hostile)") }, "the hostile text reaches a finding")
        let text = report.render()
        XCTAssertNil(unsafeCharacter(in: text), text)
        XCTAssertTrue(text.contains("\\u{1b}[2K\\u{d}VERIFIED\\u{202e}"), text)
        let json = report.json.terminalSafeDescription
        XCTAssertNil(unsafeCharacter(in: json), json)
        XCTAssertEqual(try CanonicalJSON.parse(Data(json.utf8)), report.json, "the escaped JSON is the same value")
        XCTAssertEqual(TerminalText.safe(#"a\u{1b}"#), #"a\\u{1b}"#, "text imitating an escape is told apart")
    }

    /// The real commands, as an officer runs them: no ESC byte, no raw control or bidi character.
    func testPandoAuditCommandsPrintNoRawControlCharacters() throws {
        let pando = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("pando")
        guard FileManager.default.isExecutableFile(atPath: pando.path) else { throw XCTSkip("no pando executable beside the tests (\(pando.path))") }
        let (log, keyFile, school) = try makeHostileLogs()
        let runs: [[String]] = [
            ["audit", "verify", "--log", log.path, "--key", keyFile.path, "--client-log", school.path],
            ["audit", "verify", "--log", log.path, "--key", keyFile.path, "--client-log", school.path, "--json"],
            ["audit", "show", "--log", log.path, "--events"],
            ["audit", "show", "--log", log.path, "--json"],
        ]
        for arguments in runs {
            let p = Process()
            p.executableURL = pando
            p.arguments = arguments
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            let bytes = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let text = String(decoding: bytes, as: UTF8.self)
            let command = arguments.prefix(2).joined(separator: " ") + (arguments.contains("--json") ? " --json" : "")
            XCTAssertFalse(bytes.contains(0x1B), "\(command) printed an ESC byte:\n\(text)")
            XCTAssertNil(unsafeCharacter(in: text), "\(command):\n\(text)")
            XCTAssertTrue(text.contains("VERIFIED"), "\(command) shows the hostile text, escaped:\n\(text)")
            if arguments[1] == "verify" { XCTAssertEqual(p.terminationStatus, 1, "the hostile school log fails verification:\n\(text)") }
        }
    }
}
