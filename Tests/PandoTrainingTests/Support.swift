import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoTraining
import XCTest

enum TestFiles {
    static let fixtures = TestFixtures.root
    static let repository = TestFixtures.repository
    static func temporaryDirectory() throws -> URL { try TestFixtures.temporaryDirectory(prefix: "pando-training-test") }
    static func tinyModel() throws -> URL { try TestFixtures.tinyModelFolder() }
    static func defaultModel() throws -> URL { try TestFixtures.defaultModel() }
}

func dataset(_ rows: [(text: String, label: String)], labels: [String] = ["a", "b"]) throws -> LabeledDataset {
    let map = try LabelMap(names: labels)
    return LabeledDataset(task: .classification, labels: map,
                          examples: rows.enumerated().map { Example(text: $1.text, target: .classIndex(map.index(of: $1.label)!), line: $0 + 2) })
}

func writeCSV(_ rows: [(text: String, label: String)], to url: URL) throws {
    var s = "text,label\n"
    for r in rows { s += "\"\(r.text.replacingOccurrences(of: "\"", with: "\"\""))\",\(r.label)\n" }
    try s.write(to: url, atomically: true, encoding: .utf8)
}

func quickOptions(seed: UInt64 = 42, epochs: Int = 4) -> TrainingOptions {
    var o = TrainingOptions()
    o.epochs = epochs
    o.learningRate = 2e-3
    o.batchSize = 16
    o.maxLength = 24
    o.seed = seed
    o.patience = nil
    o.lengthGroupingBatches = 2
    return o
}
