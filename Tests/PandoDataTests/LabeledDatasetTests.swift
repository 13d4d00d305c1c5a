import Foundation
import XCTest
@testable import PandoData

final class LabeledDatasetTests: TempDirTestCase {
    func testClassificationLabelMapSortedByName() throws {
        let url = try write("c.csv", "text,label\nx,zeta\ny,alpha\nz,mid\nw,alpha\n")
        let d = try LabeledDataset.load(file: url, textColumn: "text", labelColumn: "label", task: .classification)
        XCTAssertEqual(d.labels.names, ["alpha", "mid", "zeta"])
        XCTAssertEqual(d.examples.map(\.target), [.classIndex(2), .classIndex(0), .classIndex(1), .classIndex(0)])
        XCTAssertEqual(d.examples.map(\.line), [2, 3, 4, 5])
        XCTAssertEqual(d.report.kept, 4)
        XCTAssertEqual(d.report.totalSkipped, 0)
        XCTAssertEqual(d.labelCounts, [2, 1, 1])
    }

    func testMissingColumnListsAvailable() throws {
        let url = try write("m.csv", "question,category\nq,a\n")
        let error = dataError { _ = try LabeledDataset.load(file: url, task: .classification) }
        XCTAssertEqual(error?.reason, .missingColumn(available: ["question", "category"]))
        XCTAssertEqual(error?.column, "text")
        XCTAssertTrue(error!.description.contains("'question', 'category'"), error!.description)
    }

    func testEmptyFileIsError() throws {
        let headerOnly = try write("h.csv", "text,label\n")
        XCTAssertEqual(dataError { _ = try LabeledDataset.load(file: headerOnly, task: .classification) }?.reason, .noRows)
        let empty = try write("e.jsonl", "\n\n")
        XCTAssertEqual(dataError { _ = try LabeledDataset.load(file: empty, task: .classification) }?.reason, .noRows)
    }

    func testFailPolicyNamesLineForEmptyText() throws {
        let url = try write("f.csv", "text,label\nok,a\n\"  \",b\n")
        let error = dataError { _ = try LabeledDataset.load(file: url, task: .classification, policy: .fail) }
        XCTAssertEqual(error?.reason, .emptyText)
        XCTAssertEqual(error?.line, 3)
        XCTAssertEqual(error?.column, "text")
    }

    func testSkipPolicyCountsEveryReason() throws {
        let csv = """
        text,label
        good one,a
        ,a
        \"   \",b
        no label,
        unknown,c
        good two,b
        another unknown,d
        """
        let url = try write("s.csv", csv)
        let labels = try LabelMap(names: ["a", "b"])
        let d = try LabeledDataset.load(file: url, task: .classification, labels: labels, policy: .skip)
        XCTAssertEqual(d.examples.map(\.text), ["good one", "good two"])
        XCTAssertEqual(d.examples.map(\.line), [2, 7])
        XCTAssertEqual(d.report.rowsRead, 7)
        XCTAssertEqual(d.report.kept, 2)
        XCTAssertEqual(d.report.skipped, [.emptyText: 2, .missingLabel: 1, .unknownLabel: 2])
        XCTAssertEqual(d.report.firstSkippedLines[.emptyText], [3, 4])
        XCTAssertEqual(d.report.firstSkippedLines[.unknownLabel], [6, 8])
        XCTAssertTrue(d.report.description.contains("skipped 2 unknown-label (lines 6, 8)"), d.report.description)

        let error = dataError { _ = try LabeledDataset.load(file: url, task: .classification, labels: labels, policy: .fail) }
        XCTAssertEqual(error?.line, 3)
    }

    func testUnknownLabelFails() throws {
        let url = try write("u.csv", "text,label\nx,a\ny,zzz\n")
        let error = dataError {
            _ = try LabeledDataset.load(file: url, task: .classification, labels: try LabelMap(names: ["a", "b"]))
        }
        XCTAssertEqual(error?.reason, .unknownLabel("zzz", known: ["a", "b"]))
        XCTAssertEqual(error?.line, 3)
        XCTAssertEqual(error?.column, "label")
        XCTAssertTrue(error!.description.contains("u.csv:3: column 'label': unknown label 'zzz'"), error!.description)
    }

    func testAllRowsSkippedIsError() throws {
        let url = try write("a.csv", "text,label\n,a\n")
        XCTAssertNotNil(dataError { _ = try LabeledDataset.load(file: url, task: .classification, policy: .skip) })
    }

    func testMultiLabelFromDelimitedStringAndJSONList() throws {
        let csv = try write("m.csv", "text,tags\nt1,b|a\nt2,\nt3, c | a |\n")
        let d = try LabeledDataset.load(file: csv, labelColumn: "tags", task: .multiLabel)
        XCTAssertEqual(d.labels.names, ["a", "b", "c"])
        XCTAssertEqual(d.examples.map(\.target), [.labelSet([0, 1]), .labelSet([]), .labelSet([0, 2])])

        let semi = try write("m2.csv", "text,label\nt1,x;y\n")
        let d2 = try LabeledDataset.load(file: semi, task: .multiLabel, multiLabelDelimiter: ";")
        XCTAssertEqual(d2.examples[0].target, .labelSet([0, 1]))

        let jsonl = try write("m.jsonl", "{\"text\":\"t1\",\"label\":[\"y\",\"x\"]}\n{\"text\":\"t2\",\"label\":\"x|z\"}\n")
        let d3 = try LabeledDataset.load(file: jsonl, task: .multiLabel, labels: try LabelMap(names: ["z", "y", "x"]))
        XCTAssertEqual(d3.examples.map(\.target), [.labelSet([1, 2]), .labelSet([0, 2])])
        XCTAssertEqual(d3.examples[0].target.multiHot(count: 3), [0, 1, 1])
    }

    func testRegressionScores() throws {
        let url = try write("r.csv", "text,label\na,1.5\nb,-2\nc, 3e0 \n")
        let d = try LabeledDataset.load(file: url, task: .regression)
        XCTAssertEqual(d.examples.map(\.target), [.score(1.5), .score(-2), .score(3)])
        XCTAssertEqual(d.labels.count, 0)

        let bad = try write("rb.csv", "text,label\na,1\nb,high\n")
        let error = dataError { _ = try LabeledDataset.load(file: bad, task: .regression, policy: .skip) }
        XCTAssertEqual(error?.reason, .invalidNumber("high"))
        XCTAssertEqual(error?.line, 3)
        XCTAssertEqual(error?.column, "label")

        let jsonl = try write("r.jsonl", "{\"text\":\"a\",\"label\":0.25}\n{\"text\":\"b\",\"label\":\"nan\"}\n")
        XCTAssertEqual(dataError { _ = try LabeledDataset.load(file: jsonl, task: .regression) }?.line, 2)
    }

    func testUnsupportedExtension() throws {
        let url = try write("d.xlsx", "x")
        XCTAssertEqual(dataError { _ = try LabeledDataset.load(file: url, task: .classification) }?.reason,
                       .unsupportedFormat("xlsx"))
    }

    func testLabelMapCodableAndValidation() throws {
        let map = try LabelMap(names: ["neg", "neu", "pos"])
        let json = try JSONEncoder().encode(map)
        XCTAssertEqual(String(decoding: json, as: UTF8.self), "[\"neg\",\"neu\",\"pos\"]")
        XCTAssertEqual(try JSONDecoder().decode(LabelMap.self, from: json), map)
        XCTAssertEqual(map.index(of: "pos"), 2)
        XCTAssertEqual(map.id2label["1"], "neu")
        XCTAssertThrowsError(try LabelMap(names: ["a", "a"]))
        XCTAssertThrowsError(try JSONDecoder().decode(LabelMap.self, from: Data("[\"a\",\"a\"]".utf8)))
        XCTAssertEqual(try JSONEncoder().encode(TaskKind.multiLabel), Data("\"multi-label\"".utf8))
    }

    func testReportCodable() throws {
        var report = LoadReport(file: "f.csv")
        report.skip(.emptyText, line: 4)
        let data = try JSONEncoder().encode(report)
        XCTAssertEqual(try JSONDecoder().decode(LoadReport.self, from: data), report)
        XCTAssertTrue(String(decoding: data, as: UTF8.self).contains("\"empty-text\""))
    }
}
