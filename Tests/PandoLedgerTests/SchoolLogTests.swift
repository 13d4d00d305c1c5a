import Foundation
import XCTest
@testable import PandoLedger

/// A school's log after a torn write (issue 17, item 10): the school can restart, and the chain stays valid.
final class SchoolLogRepairTests: LedgerTestCase {
    func entry(_ round: Int) -> SchoolLogEntry {
        SchoolLogEntry(school: "north-high", round: round, baseVersion: Digest.zero, updateSHA256: String(repeating: "ab", count: 32),
                       wireBytes: 10, examples: 5, federation: "district-7")
    }

    /// Problems `pando audit verify` finds in the school log's own chain.
    func chainProblems(_ url: URL) -> [VerificationFinding] {
        var report = VerificationReport()
        _ = AuditVerifier.readClientLog(url, report: &report)
        return report.problems
    }

    /// A log of `rounds` entries; returns its URL and bytes.
    func makeLog(rounds: Int) throws -> (URL, Data) {
        let url = Fixture.folder().appendingPathComponent("school-log.jsonl")
        let log = try SchoolLog(url: url)
        for r in 1...rounds { try log.append(entry(r)) }
        return (url, try Data(contentsOf: url))
    }

    func testTornLastLineIsCutAndTheNextAppendVerifies() throws {
        for torn in [Data(#"{"baseVersion":"000"#.utf8), Data("{\"baseVersion\":\"00\0\0\0\n".utf8), Data("\n".utf8)] {
            let (url, whole) = try makeLog(rounds: 2)
            try (whole + torn).write(to: url)
            let log = try SchoolLog(url: url)
            XCTAssertTrue(log.recovery?.contains("line 3 was torn") ?? false, log.recovery ?? "nothing repaired")
            XCTAssertEqual(try Data(contentsOf: url), whole, "the torn line is gone")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: url.path + ".torn")), torn, "its bytes are kept beside the log")
            try log.append(entry(3))
            XCTAssertEqual(chainProblems(url), [])
            XCTAssertEqual(try Fixture.lines(url).count, 3)
            log.close()
            XCTAssertNil(try SchoolLog(url: url).recovery, "a second open finds nothing to repair")
        }
    }

    /// An older version appended a whole record right after a torn one (same line): the record
    /// is chained to the line before, so it is kept and only the torn bytes go.
    func testRecordAfterATornWriteIsKept() throws {
        let (url, whole) = try makeLog(rounds: 3)
        let lines = try Fixture.lines(url)
        let third = lines[2]
        try (whole.prefix(whole.count - third.count - 1) + third.prefix(40) + third + Data([0x0A])).write(to: url)
        let log = try SchoolLog(url: url)
        XCTAssertTrue(log.recovery?.contains("the whole record that ended it was kept") ?? false, log.recovery ?? "nothing repaired")
        XCTAssertEqual(try Data(contentsOf: url), whole)
        try log.append(entry(4))
        XCTAssertEqual(chainProblems(url), [])
    }

    /// An append that fails part-way (here: the file-size limit, as a full disk) is cut back,
    /// so the next append and the next start find whole records only.
    func testFailedAppendIsCutBack() throws {
        let (url, whole) = try makeLog(rounds: 1)
        let log = try SchoolLog(url: url)
        signal(SIGXFSZ, SIG_IGN)
        var saved = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &saved)
        var limited = saved
        limited.rlim_cur = rlim_t(whole.count + 40)
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limited)
        XCTAssertThrowsError(try log.append(entry(2))) { XCTAssertTrue("\($0)".contains(url.path), "\($0)") }
        setrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &saved)
        XCTAssertEqual(try Data(contentsOf: url), whole, "the partial record was cut back")
        try log.append(entry(2))
        log.close()
        XCTAssertNil(try SchoolLog(url: url).recovery)
        XCTAssertEqual(chainProblems(url), [])
        XCTAssertEqual(try Fixture.lines(url).count, 2)
    }
}

/// One writer per log (issue 17, reviewer's note): a second open, from another process or
/// this one, is refused while the first holds the log, so two clients on one cache cannot
/// each continue the chain from the same `seq` and fork it.
final class SchoolLogLockTests: LedgerTestCase {
    func entry(_ round: Int) -> SchoolLogEntry {
        SchoolLogEntry(school: "north-high", round: round, baseVersion: Digest.zero, updateSHA256: String(repeating: "ab", count: 32),
                       wireBytes: 10, examples: 5)
    }

    func testASecondWriterIsRefusedUntilTheFirstCloses() throws {
        let url = Fixture.folder().appendingPathComponent("school-log.jsonl")
        let first = try SchoolLog(url: url)
        try first.append(entry(1))
        XCTAssertThrowsError(try SchoolLog(url: url)) { error in
            XCTAssertTrue("\(error)".contains(url.path) && "\(error)".contains("in use by another pando-client"), "\(error)")
        }
        // Another process is refused too (flock is per open file, not per process; checked
        // here with a child that tries the same lock).
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        probe.arguments = ["--nonblock", url.path, "true"]
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/flock") {
            try probe.run()
            probe.waitUntilExit()
            XCTAssertNotEqual(probe.terminationStatus, 0, "another process cannot take the log's lock")
        }
        first.close()
        XCTAssertThrowsError(try first.append(entry(2)), "a closed log takes no appends")
        let second = try SchoolLog(url: url)
        try second.append(entry(2))
        var report = VerificationReport()
        _ = AuditVerifier.readClientLog(url, report: &report)
        XCTAssertEqual(report.problems, [])
    }
}
