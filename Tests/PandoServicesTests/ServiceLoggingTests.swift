import Foundation
import Logging
import PandoLedger
import PandoTestSupport
import XCTest
@testable import PandoServices

/// The services' log lines: journald's `<priority>` prefix, JSON objects for collectors, one
/// line per event whatever the message holds, and `auto` picking journald only when standard
/// error really is the journal's stream.
final class ServiceLoggingTests: XCTestCase {
    func testJournaldLinesCarryTheSyslogPriorityAndStayOnOneLine() {
        let expected: [(Logger.Level, Int)] = [(.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2)]
        for (level, priority) in expected {
            XCTAssertTrue(LogFormat.journald.line(level: level, label: "pando.coordinator", message: "x").hasPrefix("<\(priority)>pando.coordinator: "))
        }
        let line = LogFormat.journald.line(level: .warning, label: "pando.coordinator", message: "round 3 aborted:\nSIGTERM\u{202E}",
                                           metadata: ["school": "east", "round": "3"])
        XCTAssertEqual(line, "<4>pando.coordinator: round 3 aborted:\\u{a}SIGTERM\\u{202e} round=3 school=east")
    }

    func testJSONLinesHaveTimeLevelAndEvent() throws {
        let date = Date(timeIntervalSince1970: 1_796_139_673.125)
        let line = LogFormat.json.line(level: .error, label: "pando.client", message: "upload failed:\n\"disk\"\u{2028}full",
                                       metadata: ["round": "4"], date: date)
        XCTAssertFalse(line.contains("\n"))
        XCTAssertFalse(line.contains("\u{2028}"))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["time", "level", "logger", "event", "metadata"])
        XCTAssertEqual(object["level"] as? String, "error")
        XCTAssertEqual(object["logger"] as? String, "pando.client")
        XCTAssertEqual(object["event"] as? String, "upload failed:\n\"disk\"\u{2028}full")
        XCTAssertEqual(object["metadata"] as? [String: String], ["round": "4"])
        let time = try XCTUnwrap(object["time"] as? String)
        XCTAssertEqual(time, "2026-12-01T15:41:13.125Z")
        XCTAssertNil(try XCTUnwrap(JSONSerialization.jsonObject(with: Data(LogFormat.json.line(level: .info, label: "l", message: "m").utf8)) as? [String: Any])["metadata"])
    }

    func testAutoIsJournaldOnlyWhenJournalStreamNamesTheDescriptor() throws {
        let url = try TestFixtures.temporaryDirectory().appendingPathComponent("stream")
        FileManager.default.createFile(atPath: url.path, contents: nil)
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var st = stat()
        XCTAssertEqual(fstat(handle.fileDescriptor, &st), 0)
        let fd = handle.fileDescriptor
        XCTAssertEqual(LogFormat.auto.resolved(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino)"], descriptor: fd), .journald)
        XCTAssertEqual(LogFormat.auto.resolved(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino + 1)"], descriptor: fd), .console,
                       "inherited by a process whose stderr was redirected elsewhere")
        XCTAssertEqual(LogFormat.auto.resolved(environment: [:], descriptor: fd), .console)
        XCTAssertEqual(LogFormat.json.resolved(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino)"], descriptor: fd), .json)
    }

    func testTheHandlerWritesOneLinePerEvent() throws {
        let pipe = Pipe()
        var logger = Logger(label: "pando.test") { label in
            ServiceLogHandler(label: label, format: .json, level: .info, descriptor: pipe.fileHandleForWriting.fileDescriptor)
        }
        logger[metadataKey: "federation"] = "f1"
        logger.debug("not at this level")
        logger.info("first")
        logger.warning("second\nthird", metadata: ["school": "east"])
        try pipe.fileHandleForWriting.close()
        let lines = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        let objects = try lines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        XCTAssertEqual(objects.map { $0["event"] as? String }, ["first", "second\nthird"])
        XCTAssertEqual(objects.map { $0["level"] as? String }, ["info", "warning"])
        XCTAssertEqual(objects[1]["metadata"] as? [String: String], ["federation": "f1", "school": "east"])
    }
}
