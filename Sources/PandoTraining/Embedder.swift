import Foundation
import PandoEngine
import PandoText

/// Sentence embeddings as sentence-transformers computes them for a
/// BERT-family model folder: tokenise (truncating at the folder's
/// `max_seq_length`), encode, pool per `1_Pooling/config.json` (mean by
/// default), L2-normalise when `modules.json` lists a Normalize module.
public final class Embedder {
    public let model: BertModel
    public let tokenizer: BertTokenizer
    public let maxLength: Int
    public let pooling: Pooling
    public let normalize: Bool

    /// - Parameter normalize: nil follows `modules.json` (normalise when it has a
    ///   Normalize module, or when there is no modules.json).
    public init(folder: URL, maxLength: Int? = nil, normalize: Bool? = nil) throws {
        (model, _) = try BertModel.load(from: folder, head: .encoderOnly)
        tokenizer = try BertTokenizer(folder: folder)
        func json(_ name: String) -> [String: Any]? {
            guard let data = try? Data(contentsOf: folder.appendingPathComponent(name)) else { return nil }
            return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        }
        let configured = json("sentence_bert_config.json")?["max_seq_length"] as? Int
        self.maxLength = min(maxLength ?? configured ?? 512, model.config.maxPositions)
        var pooling = Pooling.mean
        if let p = json("1_Pooling/config.json"), p["pooling_mode_cls_token"] as? Bool == true, p["pooling_mode_mean_tokens"] as? Bool != true {
            pooling = .cls
        }
        self.pooling = pooling
        if let normalize {
            self.normalize = normalize
        } else if let data = try? Data(contentsOf: folder.appendingPathComponent("modules.json")),
                  let modules = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] {
            self.normalize = modules.contains { ($0["type"] as? String)?.hasSuffix("Normalize") == true }
        } else {
            self.normalize = true
        }
    }

    public var dimension: Int { model.config.hiddenSize }

    public func embed(_ texts: [String], batchSize: Int = 64) -> [[Float]] {
        let sequences = texts.map { tokenizer.encode($0, maxLength: maxLength).ids }
        return BatchedInference(model: model, batchSize: batchSize, maxLength: maxLength)
            .embeddings(sequences, pooling: pooling, normalize: normalize)
    }
}

/// NumPy `.npy` files (format version 1.0, little-endian float32, C order).
public enum NPY {
    /// The bytes of an `.npy` file holding `rows` (all of equal length) as a 2-D float32 array.
    public static func encode(_ rows: [[Float]]) -> Data {
        let columns = rows.first?.count ?? 0
        precondition(rows.allSatisfy { $0.count == columns }, "rows of different lengths")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(rows.count), \(columns)), }"
        // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in \n.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.reserveCapacity(data.count + rows.count * columns * 4)
        for row in rows {
            for x in row {
                let bits = x.bitPattern.littleEndian
                withUnsafeBytes(of: bits) { data.append(contentsOf: $0) }
            }
        }
        return data
    }
}
