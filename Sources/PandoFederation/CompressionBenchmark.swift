import Dispatch
import PandoEngine

/// Measures each compression on a model-sized delta: the school's encode (top-k's selection
/// included), the coordinator's decode, and the bytes against Float32, on the trained tensors
/// of a federated round (embedding tables frozen). Values are a fixed pseudo-random delta of
/// the size local training makes (about 1e-4), with heavier rows mixed in.
public enum CompressionBenchmark {
    public struct Row: Codable, Sendable {
        public var compression: String
        public var bytes: Int
        public var fractionOfFloat32: Double
        public var encodeSeconds: Double
        public var decodeSeconds: Double
    }

    public static func run(layout: ParameterLayout, topKDensity: Double = 0.01, repeats: Int = 3) throws -> [Row] {
        let delta = ParameterBuffer(layout: layout)
        let key = CounterRandom.key(13, 29)
        let p = delta.buffer.base
        for i in 0..<layout.count { p[i] = 1e-4 * CounterRandom.normal(key, i) * (i % 97 == 0 ? 20 : 1) }
        let selection = TensorSelection(layout: layout, frozen: TensorSelection.embeddingTables)
        let out = ParameterBuffer(layout: layout)
        var rows: [Row] = []
        for compression in [UpdateCompression.float16, .int8, .topK(density: topKDensity)] {
            let pipeline = UpdatePipeline(selection: selection, compression: compression)
            var encodeSeconds = Double.infinity, decodeSeconds = Double.infinity
            var encoded: CompressedUpdateFile.Encoded?
            for _ in 0..<repeats {
                var start = DispatchTime.now().uptimeNanoseconds
                encoded = try CompressedUpdateFile.encode(delta, pipeline: pipeline, residual: nil)
                encodeSeconds = min(encodeSeconds, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                start = DispatchTime.now().uptimeNanoseconds
                try encoded!.bytes.withUnsafeBytes { try CompressedUpdateFile.decode($0, pipeline: pipeline, into: out) }
                decodeSeconds = min(decodeSeconds, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            rows.append(Row(compression: compression.description, bytes: encoded!.bytes.count,
                            fractionOfFloat32: Double(encoded!.bytes.count) / Double(4 * selection.trainedCount),
                            encodeSeconds: encodeSeconds, decodeSeconds: decodeSeconds))
        }
        return rows
    }
}
