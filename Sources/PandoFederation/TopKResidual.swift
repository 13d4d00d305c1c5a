import Crypto
import Foundation
import PandoEngine

/// Top-k's error feedback: what a school's earlier top-k updates did not send, added to its
/// next delta before selecting (Stich et al., 2018; Karimireddy et al., 2019), so every
/// coordinate's change reaches the coordinator eventually and `Σ sent + residual = Σ delta`.
///
/// It lives in the school's own state (one file, written atomically, mode 0600: it is derived
/// from the students' data like the delta) and survives restarts. It is keyed by the
/// federation and the trained tensors' names and shapes; it is written when the update is
/// logged, before a byte is offered, so a crash never sends the same residual twice (an
/// update the round then leaves out loses what it carried, as any lost update loses its
/// training). A school that misses rounds keeps its residual for up to ``maxAgeRounds``
/// rounds: the coordinates it holds are still changes the federation has not seen. It is
/// dropped when it cannot belong to the version being trained: another federation or model,
/// a round number not after its own (a reset federation), or a base version that does not
/// descend from the one it was made on (a rollback past it).
public struct TopKResidual: Sendable, Equatable {
    /// What the residual belongs to.
    public struct Key: Sendable, Equatable, Codable {
        public var federation: String
        /// Hex SHA-256 of the trained tensors' names and shapes, in order.
        public var layout: String

        public init(federation: String, selection: TensorSelection) {
            self.federation = federation
            let text = selection.trained.map { "\($0.name):\($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: "\n")
            layout = SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
        }
    }

    /// Rounds a residual may wait for a school that is not selected.
    public static let maxAgeRounds = 10

    public var key: Key
    /// The round whose update left this residual, and the version that round trained from.
    public var round: Int
    public var baseVersion: String
    /// One value per trained value, in ``TensorSelection/trained`` order.
    public var values: [Float]

    public init(key: Key, round: Int, baseVersion: String, values: [Float]) {
        self.key = key
        self.round = round
        self.baseVersion = baseVersion
        self.values = values
    }

    /// Why this residual must not be added to a delta of `round` trained from a version whose
    /// lineage (the version and its ancestors) is `lineage`; nil when it may.
    public func unusable(for key: Key, round: Int, lineage: Set<String>) -> String? {
        if key.federation != self.key.federation { return "it belongs to federation '\(self.key.federation)'" }
        if key.layout != self.key.layout { return "it was made for other trained tensors" }
        if round <= self.round { return "it was left by round \(self.round), not before round \(round)" }
        if round - self.round > Self.maxAgeRounds { return "it is \(round - self.round) rounds old (at most \(Self.maxAgeRounds))" }
        if !lineage.contains(baseVersion) { return "the version being trained does not descend from \(baseVersion.prefix(12)), which it was made on" }
        return nil
    }

    struct Header: Codable {
        var key: Key
        var round: Int
        var baseVersion: String
        var count: Int
    }

    static let magic = Array("PNDR".utf8)

    /// Writes the residual atomically, mode 0600: `PNDR`, u32 header length, the header as
    /// JSON, then the values as little-endian Float32.
    public func save(to url: URL) throws {
        let header = try JSONEncoder().encode(Header(key: key, round: round, baseVersion: baseVersion, count: values.count))
        try AtomicFile.write(to: url, mode: 0o600) { writer in
            var prefix = Self.magic
            withUnsafeBytes(of: UInt32(header.count).littleEndian) { prefix += $0 }
            try prefix.withUnsafeBytes { try writer.write($0) }
            try header.withUnsafeBytes { try writer.write($0) }
            try values.withUnsafeBytes { try writer.write($0) }
        }
    }

    /// The residual at `url`; nil when there is none. A file that does not parse is an error
    /// (the caller drops it and says so: the school's own file, damaged, is not worth a crash).
    public static func load(from url: URL) throws -> TopKResidual? {
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let data = try Data(contentsOf: url)
        func bad(_ why: String) -> UpdateFileError { UpdateFileError(path: url.path, reason: why) }
        guard data.count >= 8, Array(data.prefix(4)) == magic else { throw bad("not a top-k residual") }
        let length = Int(data[4]) | Int(data[5]) << 8 | Int(data[6]) << 16 | Int(data[7]) << 24
        guard length <= 4096, data.count >= 8 + length else { throw bad("header of \(length) bytes in a file of \(data.count)") }
        let header = try JSONDecoder().decode(Header.self, from: data.subdata(in: 8..<(8 + length)))
        guard header.count >= 0, data.count == 8 + length + 4 * header.count else {
            throw bad("\(data.count) bytes, expected \(8 + length + 4 * max(0, header.count)) for \(header.count) values")
        }
        var values = [Float](repeating: 0, count: header.count)
        values.withUnsafeMutableBytes { dst in
            data.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(8 + length)...])) }
        }
        #if !_endian(little)
        for i in values.indices { values[i] = Float(bitPattern: UInt32(littleEndian: values[i].bitPattern)) }
        #endif
        guard values.allSatisfy(\.isFinite) else { throw bad("a value is not finite") }
        return TopKResidual(key: header.key, round: header.round, baseVersion: header.baseVersion, values: values)
    }
}
