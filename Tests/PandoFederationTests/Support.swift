import Foundation
import PandoData
import PandoEngine
@testable import PandoFederation
import XCTest

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent(path))) as! [String: Any]
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pando-federation-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// The tiny random BERT (vocab 99, hidden 32, 2 layers) with a made-up vocabulary tok0 … tok93.
    static func tinyModelFolder() throws -> URL {
        let folder = try temporaryDirectory().appendingPathComponent("tiny")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: root.appendingPathComponent("tiny/softmax/\(name)"), to: folder.appendingPathComponent(name))
        }
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (0..<94).map { "tok\($0)" }
        try (vocab.joined(separator: "\n") + "\n").write(to: folder.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        return folder
    }

    /// A padded batch from inputs.json, packed by its attention mask.
    static func packedBatch(_ inputs: [String: Any]) -> PackedBatch {
        let ids = inputs["input_ids"] as! [[Int]]
        let types = inputs["token_type_ids"] as! [[Int]]
        let mask = inputs["attention_mask"] as! [[Int]]
        var seqs: [[Int32]] = [], tys: [[Int32]] = []
        for (row, m) in mask.enumerated() {
            let n = m.reduce(0, +)
            seqs.append(ids[row].prefix(n).map(Int32.init))
            tys.append(types[row].prefix(n).map(Int32.init))
        }
        return PackedBatch(sequences: seqs, types: tys)
    }
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

/// A separable synthetic task: class "a" texts use tok0…tok9, class "b" tok10…tok19,
/// both mixed with filler tok20…tok49.
func synthetic(count: Int, seed: UInt64) -> [(text: String, label: String)] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { i in
        let label = i % 2 == 0 ? "a" : "b"
        let base = label == "a" ? 0 : 10
        let n = 3 + Int(rng.next() % 8)
        var words: [String] = []
        for _ in 0..<n {
            words.append(rng.next() % 2 == 0 ? "tok\(base + Int(rng.next() % 10))" : "tok\(20 + Int(rng.next() % 30))")
        }
        return (words.joined(separator: " "), label)
    }
}

func dataset(_ rows: [(text: String, label: String)], labels: [String] = ["a", "b"]) throws -> LabeledDataset {
    let map = try LabelMap(names: labels)
    return LabeledDataset(task: .classification, labels: map,
                          examples: rows.enumerated().map { Example(text: $1.text, target: .classIndex(map.index(of: $1.label)!), line: $0 + 2) })
}
