import Foundation
import XCTest
@testable import PandoEngine

/// Paths and loaders for the committed fixtures (made by Tests/Fixtures/make_fixtures.py).
enum Fixture {
    static let root = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let repository = root.deletingLastPathComponent().deletingLastPathComponent()

    static func url(_ path: String) -> URL { root.appendingPathComponent(path) }

    static func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(path))) as! [String: Any]
    }

    /// The default pretrained model that deploy/bootstrap links.
    static func defaultModel() throws -> URL {
        let url = repository.appendingPathComponent("models/default")
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("model.safetensors").path) else {
            throw XCTSkip("models/default is missing: run deploy/bootstrap")
        }
        return url
    }

    /// A padded batch from an inputs.json (input_ids, token_type_ids, attention_mask) packed by its mask.
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

/// Largest absolute difference, and the largest reference magnitude.
func maxDifference(_ a: [Float], _ b: [Float]) -> (diff: Float, scale: Float) {
    precondition(a.count == b.count)
    var d: Float = 0, s: Float = 0
    for i in a.indices { d = max(d, abs(a[i] - b[i])); s = max(s, abs(b[i])) }
    return (d, s)
}

func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("pando-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
