import Foundation
import XCTest
@testable import PandoData

/// A fresh temporary directory per test; files written into it are removed afterwards.
class TempDirTestCase: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("pando-data-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> URL {
        try write(name, Data(text.utf8))
    }

    @discardableResult
    func write(_ name: String, _ bytes: Data) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try bytes.write(to: url)
        return url
    }

    func dataError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> DataError? {
        do {
            try body()
            XCTFail("expected a DataError", file: file, line: line)
            return nil
        } catch let error as DataError {
            return error
        } catch {
            XCTFail("expected a DataError, got \(error)", file: file, line: line)
            return nil
        }
    }
}

final class CSVReaderTests: TempDirTestCase {
    func testQuotesEscapesEmbeddedNewlinesAndLineNumbers() throws {
        let csv = [
            "text,label",
            "plain,a",
            #""with, comma",b"#,
            #""say ""hi""",a"#,
            #""two"#,
            #"lines",b"#,
            #""three"#,
            "whole",
            #"lines",a"#,
            "after,b",
            "",
        ].joined(separator: "\n")
        let table = try CSVReader().read(url: try write("q.csv", csv))
        XCTAssertEqual(table.columns, ["text", "label"])
        XCTAssertEqual(table.rows.map { $0["text"]!.text },
                       ["plain", "with, comma", "say \"hi\"", "two\nlines", "three\nwhole\nlines", "after"])
        XCTAssertEqual(table.rows.map(\.line), [2, 3, 4, 5, 7, 10])
        XCTAssertEqual(table.rows.last?["label"], .string("b"))
        XCTAssertNil(table.rows[0]["nope"])
    }

    func testCRLFAndBOM() throws {
        var bytes = Data([0xEF, 0xBB, 0xBF])
        bytes.append(Data("text,label\r\n\"a\r\nb\",x\r\nc,y\r\n\r\nd,z".utf8))
        let table = try CSVReader().read(url: try write("crlf.csv", bytes))
        XCTAssertEqual(table.columns, ["text", "label"])  // BOM not part of the first name
        XCTAssertEqual(table.rows.map { $0.values[0].text }, ["a\r\nb", "c", "d"])
        XCTAssertEqual(table.rows.map { $0.values[1].text }, ["x", "y", "z"])
        XCTAssertEqual(table.rows.map(\.line), [2, 4, 6])
    }

    func testEmptyFieldsAndTrailingDelimiter() throws {
        let table = try CSVReader().parse(Data("a,b,c\n,,\n1,2,\n\"\",x,y\n".utf8))
        XCTAssertEqual(table.rows.map { $0.values.map(\.text) }, [["", "", ""], ["1", "2", ""], ["", "x", "y"]])
    }

    func testTSV() throws {
        let table = try Table.read(url: try write("t.tsv", "text\tlabel\nhello, world\tpos\n"), columns: [])
        XCTAssertEqual(table.rows[0]["text"], .string("hello, world"))
    }

    func testRaggedRowNamesLine() throws {
        let url = try write("ragged.csv", "text,label\n\"multi\nline\",a\nok,b\ntoo,many,fields\n")
        let error = dataError { _ = try CSVReader().read(url: url) }
        XCTAssertEqual(error?.reason, .wrongFieldCount(expected: 2, found: 3))
        XCTAssertEqual(error?.line, 5)
        XCTAssertTrue(error!.description.hasPrefix("ragged.csv:5:"), error!.description)
        let short = dataError { _ = try CSVReader().parse(Data("a,b\nonly\n".utf8), file: "s.csv") }
        XCTAssertEqual(short?.reason, .wrongFieldCount(expected: 2, found: 1))
        XCTAssertEqual(short?.line, 2)
    }

    func testUnterminatedQuote() throws {
        let url = try write("open.csv", "text,label\nfine,a\n\"never closed,b\nmore,c\n")
        let error = dataError { _ = try CSVReader().read(url: url) }
        XCTAssertEqual(error?.reason, .unterminatedQuote)
        XCTAssertEqual(error?.line, 3)
        XCTAssertEqual(error?.column, "text")
        XCTAssertTrue(error!.description.contains("open.csv:3: column 'text'"), error!.description)
    }

    func testCharacterAfterClosingQuote() throws {
        let error = dataError { _ = try CSVReader().parse(Data("text,label\n\"a\"b,c\n".utf8), file: "x.csv") }
        XCTAssertEqual(error?.reason, .unexpectedCharacterAfterQuote)
        XCTAssertEqual(error?.line, 2)
    }

    func testInvalidUTF8NamesLineAndColumn() throws {
        var bytes = Data("text,label\nok,a\nbad".utf8)
        bytes.append(contentsOf: [0xC3, 0x28])
        bytes.append(Data(",b\n".utf8))
        let error = dataError { _ = try CSVReader().read(url: try write("u.csv", bytes)) }
        XCTAssertEqual(error?.reason, .invalidUTF8)
        XCTAssertEqual(error?.line, 3)
        XCTAssertEqual(error?.column, "text")
    }

    func testNonASCIIText() throws {
        let table = try CSVReader().parse(Data("text,label\n\"Ünïcödé — 数学 🙂\",a\n".utf8))
        XCTAssertEqual(table.rows[0]["text"]?.text, "Ünïcödé — 数学 🙂")
    }

    func testEmptyFileAndHeaderOnly() throws {
        let empty = dataError { _ = try CSVReader().read(url: try write("e.csv", "")) }
        XCTAssertEqual(empty?.reason, .noHeader)
        let headerOnly = try CSVReader().parse(Data("text,label\n".utf8))
        XCTAssertEqual(headerOnly.rows.count, 0)
    }

    func testDuplicateHeader() throws {
        let error = dataError { _ = try CSVReader().parse(Data("text,text\na,b\n".utf8)) }
        XCTAssertEqual(error?.reason, .duplicateColumn("text"))
    }

    func testOneMegabyteField() throws {
        let big = String(repeating: "word, \"quoted\" and\nnewline ", count: 40_000)  // ≈1.1 MB
        let escaped = big.replacingOccurrences(of: "\"", with: "\"\"")
        let csv = "text,label\n\"\(escaped)\",a\nafter,b\n"
        let table = try CSVReader().read(url: try write("big.csv", csv))
        XCTAssertGreaterThan(big.utf8.count, 1_000_000)
        XCTAssertEqual(table.rows[0]["text"]?.text, big)
        XCTAssertEqual(table.rows[1].line, 2 + 40_000 + 1)
        XCTAssertEqual(table.rows[1]["text"], .string("after"))
    }

    func testManyRowsParse() throws {
        var csv = "text,label\n"
        for i in 0..<20_000 { csv += "\"row \(i), with comma\",c\(i % 7)\n" }
        let table = try CSVReader().parse(Data(csv.utf8))
        XCTAssertEqual(table.rows.count, 20_000)
        XCTAssertEqual(table.rows[19_999].line, 20_001)
    }
}

final class JSONLinesReaderTests: TempDirTestCase {
    func testReadsObjectsSkipsBlankLinesKeepsLines() throws {
        let jsonl = """
        {"text": "first", "label": "a", "extra": {"nested": true}}

        {"text": "second", "label": 3}
        {"text": "third", "label": ["x", "y"]}
        """
        let table = try JSONLinesReader().read(url: try write("d.jsonl", jsonl), columns: ["text", "label"])
        XCTAssertEqual(table.rows.map(\.line), [1, 3, 4])
        XCTAssertEqual(table.rows[0]["label"], .string("a"))
        XCTAssertEqual(table.rows[1]["label"], .number(3))
        XCTAssertEqual(table.rows[1]["label"]?.text, "3")
        XCTAssertEqual(table.rows[2]["label"], .list(["x", "y"]))
    }

    func testInvalidJSONNamesLine() throws {
        let url = try write("bad.jsonl", "{\"text\": \"ok\", \"label\": \"a\"}\n{\"text\": oops}\n")
        let error = dataError { _ = try JSONLinesReader().read(url: url, columns: ["text", "label"]) }
        guard case .invalidJSON = error?.reason else { return XCTFail("\(String(describing: error))") }
        XCTAssertEqual(error?.line, 2)
        XCTAssertTrue(error!.description.contains("invalid JSON on line 2"), error!.description)
        XCTAssertTrue(error!.description.hasPrefix("bad.jsonl:2"), error!.description)
    }

    func testNonObjectLine() throws {
        let error = dataError { _ = try JSONLinesReader().parse(Data("[1, 2]\n".utf8), columns: ["text"]) }
        guard case .invalidJSON = error?.reason else { return XCTFail("\(String(describing: error))") }
        XCTAssertEqual(error?.line, 1)
    }

    func testUnsupportedValues() throws {
        for (value, kind) in [("null", "null"), ("true", "boolean"), ("{\"a\": 1}", "object")] {
            let data = Data("{\"text\": \"t\", \"label\": \"a\"}\n{\"text\": \"t\", \"label\": \(value)}\n".utf8)
            let error = dataError { _ = try JSONLinesReader().parse(data, columns: ["text", "label"], file: "v.jsonl") }
            XCTAssertEqual(error?.reason, .unsupportedValue(kind))
            XCTAssertEqual(error?.line, 2)
            XCTAssertEqual(error?.column, "label")
        }
    }

    func testMissingKeyListsKeysOnThatLine() throws {
        let data = Data("{\"text\": \"t\", \"lable\": \"a\"}\n".utf8)
        let error = dataError { _ = try JSONLinesReader().parse(data, columns: ["text", "label"], file: "m.jsonl") }
        XCTAssertEqual(error?.reason, .missingColumn(available: ["lable", "text"]))
        XCTAssertEqual(error?.line, 1)
        XCTAssertTrue(error!.description.contains("'lable', 'text'"), error!.description)
    }
}
