import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoFederation
import XCTest

enum Fixtures {
    static let root = TestFixtures.root
    static func json(_ path: String) throws -> [String: Any] { try TestFixtures.json(path) }
    static func temporaryDirectory() throws -> URL { try TestFixtures.temporaryDirectory(prefix: "pando-federation-test") }
    static func tinyModelFolder() throws -> URL { try TestFixtures.tinyModelFolder() }
    static func packedBatch(_ inputs: [String: Any]) -> PackedBatch { TestFixtures.packedBatch(inputs) }
}

/// A three-tensor layout of 12 values.
func smallLayout(_ specs: [(String, [Int])] = [("encoder.weight", [2, 3]), ("encoder.bias", [4]), ("head.weight", [1, 2])]) -> ParameterLayout {
    var layout = ParameterLayout()
    for (name, shape) in specs { layout.append(name, shape: shape, decays: !name.hasSuffix("bias")) }
    return layout
}

func buffer(_ layout: ParameterLayout, _ values: [Float]) -> ParameterBuffer {
    precondition(values.count == layout.count)
    let b = ParameterBuffer(layout: layout)
    for (i, v) in values.enumerated() { b.buffer[i] = v }
    return b
}

func update(_ delta: ParameterBuffer, school: String = "s", examples: Int = 10, round: Int = 1, base: String = "v0") -> ModelUpdate {
    ModelUpdate(school: school, round: round, baseVersion: base, delta: delta, exampleCount: examples)
}

func dataset(_ rows: [(text: String, label: String)], labels: [String] = ["a", "b"]) throws -> LabeledDataset {
    let map = try LabelMap(names: labels)
    return LabeledDataset(task: .classification, labels: map,
                          examples: rows.enumerated().map { Example(text: $1.text, target: .classIndex(map.index(of: $1.label)!), line: $0 + 2) })
}
