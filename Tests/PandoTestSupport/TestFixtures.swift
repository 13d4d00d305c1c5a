import Foundation
import PandoData
import PandoEngine
import XCTest

/// Shared by the test targets: where the committed fixtures are, the tiny
/// random BERT as a model folder, the default model (or a skip), and batches
/// packed from the fixtures' padded inputs.
public enum TestFixtures {
    /// `Tests/Fixtures` (symlinks resolved, so throwaway packages that link
    /// these sources still find it).
    public static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    public static let repository = root.deletingLastPathComponent().deletingLastPathComponent()

    public static func url(_ path: String) -> URL { root.appendingPathComponent(path) }

    public static func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(path))) as! [String: Any]
    }

    public static func temporaryDirectory(prefix: String = "pando-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// The tiny random BERT (vocab 99, hidden 32, 2 layers, 40 positions) as a
    /// model folder with a made-up vocabulary: 5 special tokens and tok0 … tok93.
    public static func tinyModelFolder() throws -> URL {
        let folder = try temporaryDirectory(prefix: "pando-tiny").appendingPathComponent("tiny")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: url("tiny/softmax/\(name)"), to: folder.appendingPathComponent(name))
        }
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (0..<94).map { "tok\($0)" }
        try (vocab.joined(separator: "\n") + "\n").write(to: folder.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
        return folder
    }

    /// The default pretrained model that deploy/bootstrap links, or a skip.
    public static func defaultModel() throws -> URL {
        let url = repository.appendingPathComponent("models/default")
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("model.safetensors").path) else {
            throw XCTSkip("models/default is missing: run deploy/bootstrap")
        }
        return url
    }

    /// A padded batch from an inputs.json (input_ids, token_type_ids, attention_mask), packed by its mask.
    public static func packedBatch(_ inputs: [String: Any]) -> PackedBatch {
        let ids = inputs["input_ids"] as! [[Int]]
        let types = inputs["token_type_ids"] as! [[Int]]
        let mask = inputs["attention_mask"] as! [[Int]]
        var sequences: [[Int32]] = [], typeIDs: [[Int32]] = []
        for (row, m) in mask.enumerated() {
            let n = m.reduce(0, +)
            sequences.append(ids[row].prefix(n).map(Int32.init))
            typeIDs.append(types[row].prefix(n).map(Int32.init))
        }
        return PackedBatch(sequences: sequences, types: typeIDs)
    }
}

/// A separable synthetic task: class "a" texts use tok0…tok9, class "b" tok10…tok19,
/// both mixed with filler tok20…tok49. `canary` is appended to every text.
public func synthetic(count: Int, seed: UInt64, canary: String = "") -> [(text: String, label: String)] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { i in
        let label = i % 2 == 0 ? "a" : "b"
        let base = label == "a" ? 0 : 10
        let n = 3 + Int(rng.next() % 8)
        var words: [String] = []
        for _ in 0..<n {
            words.append(rng.next() % 2 == 0 ? "tok\(base + Int(rng.next() % 10))" : "tok\(20 + Int(rng.next() % 30))")
        }
        if !canary.isEmpty { words.append(canary) }
        return (words.joined(separator: " "), label)
    }
}

