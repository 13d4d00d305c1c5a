import Foundation
import PandoData
import PandoEngine
@testable import PandoFederation
import XCTest

final class CompressionTests: XCTestCase {
    /// A layout with a frozen table, two 2-D tensors and a bias: 1,000 + 4,800 + 64 + 192 values.
    let layout = smallLayout([("embeddings.weight", [100, 10]), ("layer.weight", [64, 75]), ("layer.bias", [64]), ("head.weight", [3, 64])])
    var selection: TensorSelection { TensorSelection(layout: layout, frozen: ["embeddings.weight"]) }

    /// Deterministic values of very different sizes per row (so one scale per row matters).
    func delta(seed: UInt64 = 1) -> ParameterBuffer {
        var rng = SplitMix64(seed: seed)
        let b = ParameterBuffer(layout: layout)
        for spec in layout.tensors {
            let v = b.view(spec), rows = spec.shape.count == 2 ? spec.shape[0] : 1, cols = spec.count / rows
            for i in 0..<spec.count {
                let rowScale = Float(pow(10, Double(i / cols % 5) - 6))  // 1e-6 … 1e-2 by row
                v[i] = (Float(Double.random(in: 0..<1, using: &rng)) * 2 - 1) * rowScale
            }
        }
        return b
    }

    func roundTrip(_ d: ParameterBuffer, _ compression: UpdateCompression, residual: [Float]? = nil) throws -> (ParameterBuffer, CompressedUpdateFile.Encoded) {
        let pipeline = UpdatePipeline(selection: selection, compression: compression)
        let encoded = try CompressedUpdateFile.encode(d, pipeline: pipeline, residual: residual)
        XCTAssertEqual(encoded.bytes.count, pipeline.encodedBytes, "the size the coordinator expects")
        let out = ParameterBuffer(layout: layout)
        out.buffer.fill(.nan)  // every value must be written: the frozen tensor as zero
        try encoded.bytes.withUnsafeBytes { try CompressedUpdateFile.decode($0, pipeline: pipeline, into: out) }
        XCTAssertTrue(out.view(layout["embeddings.weight"]!).array.allSatisfy { $0 == 0 }, "frozen tensors decode as zero")
        return (out, encoded)
    }

    func testFloat16RoundTripIsWithinHalfPrecision() throws {
        let d = delta()
        let (out, encoded) = try roundTrip(d, .float16)
        XCTAssertLessThan(encoded.bytes.count, 2 * selection.trainedCount + 100)
        for spec in selection.trained {
            for i in 0..<spec.count {
                let x = d.view(spec)[i], y = out.view(spec)[i]
                // Normal halves: relative 2⁻¹¹; below 2⁻¹⁴ the spacing is 2⁻²⁴, so half of it absolute.
                XCTAssertLessThanOrEqual(abs(x - y), max(abs(x) * 0x1p-11, 0x1p-25), "\(spec.name)[\(i)]")
            }
        }
    }

    func testInt8RoundTripIsWithinHalfAStepOfItsRowScale() throws {
        let d = delta()
        let (out, encoded) = try roundTrip(d, .int8)
        // One byte a value and a Float32 scale per row of the two matrices (64 and 3 rows), two bytes a bias value.
        let body = (4 * 64 + 64 * 75) + (4 * 3 + 3 * 64) + 2 * 64
        XCTAssertEqual(encoded.bytes.count, CompressedUpdateFile.headerBytes(UpdatePipeline(selection: selection, compression: .int8).transforms) + body)
        for spec in selection.trained {
            let x = d.view(spec), y = out.view(spec)
            if spec.shape.count == 1 {
                for i in 0..<spec.count { XCTAssertLessThanOrEqual(abs(x[i] - y[i]), max(abs(x[i]) * 0x1p-11, 0x1p-25), "1-D tensors go as float16") }
                continue
            }
            let rows = spec.shape[0], cols = spec.count / rows
            for r in 0..<rows {
                let largest = (0..<cols).map { abs(x[r * cols + $0]) }.max()!
                let step = largest / 127
                for j in 0..<cols {
                    let i = r * cols + j
                    XCTAssertLessThanOrEqual(abs(x[i] - y[i]), step / 2 * 1.0001 + 1e-12, "\(spec.name)[\(r), \(j)]")
                }
            }
        }
        // A row of zeros stays zero (scale 0), exactly.
        let zeros = ParameterBuffer(layout: layout)
        XCTAssertTrue(try roundTrip(zeros, .int8).0.values.allSatisfy { $0 == 0 })
    }

    func testTopKSendsExactlyTheLargestValues() throws {
        let d = delta()
        let (out, encoded) = try roundTrip(d, .topK(density: 0.05))
        let k = UpdateCompression.topKCount(density: 0.05, of: selection.trainedCount)
        let sent = selection.trained.flatMap { out.view($0).array }, all = selection.trained.flatMap { d.view($0).array }
        XCTAssertEqual(sent.filter { $0 != 0 }.count, k)
        let threshold = all.map(abs).sorted(by: >)[k - 1]
        for (x, y) in zip(all, sent) {
            if y != 0 { XCTAssertEqual(x, y, "sent values are exact") }
            XCTAssertTrue(y != 0 || abs(x) <= threshold, "a value not sent is no larger than the k-th")
        }
        XCTAssertEqual(encoded.bytes.count, CompressedUpdateFile.headerBytes(UpdatePipeline(selection: selection, compression: .topK(density: 0.05)).transforms) + 8 + 8 * k)
    }

    /// Sampling + exact count + quickselect against a full sort, with heavy ties and zeros.
    func testTopKIndicesMatchASortOnTiesAndZeros() {
        var rng = SplitMix64(seed: 7)
        for n in [1, 2, 17, 1000, 200_003] {
            // Few distinct magnitudes, half of them zero: ties at the threshold everywhere.
            let x: [Float] = (0..<n).map { _ in Double.random(in: 0..<1, using: &rng) < 0.5 ? 0 : Float(Int(Double.random(in: 0..<1, using: &rng) * 8) - 4) / 4 }
            for k in Set([1, max(1, n / 100), max(1, n / 3), n]) {
                let got = x.withUnsafeBufferPointer { TopK.indices($0.baseAddress!, count: n, k: k) }
                // Reference: stable sort by magnitude, descending, lowest index first among equals.
                let want = (0..<n).sorted { abs(x[$0]) != abs(x[$1]) ? abs(x[$0]) > abs(x[$1]) : $0 < $1 }.prefix(k).sorted().map { UInt32($0) }
                XCTAssertEqual(got, want, "n \(n), k \(k)")
            }
        }
        var a: [Float] = [5, 1, 4, 1, 5, 9, 2, 6]
        XCTAssertEqual(TopK.kthLargest(&a, 1), 9)
        a = [5, 1, 4, 1, 5, 9, 2, 6]
        XCTAssertEqual(TopK.kthLargest(&a, 3), 5)
        a = [5, 1, 4, 1, 5, 9, 2, 6]
        XCTAssertEqual(TopK.kthLargest(&a, 8), 1)
    }

    /// Over several rounds, what was sent plus the residual is every delta so far, exactly
    /// (values on a binary grid, so every Float sum is exact).
    func testErrorFeedbackAccumulatesExactly() throws {
        var rng = SplitMix64(seed: 3)
        var residual: [Float]? = nil
        let n = selection.trainedCount
        var deltas = [Float](repeating: 0, count: n), sent = [Float](repeating: 0, count: n)
        var everSent = Set<Int>()
        for _ in 1...6 {
            let d = ParameterBuffer(layout: layout)
            for i in 0..<layout.count { d.buffer[i] = Float(Int(Double.random(in: 0..<1, using: &rng) * 64) - 32) / 64 }
            let (out, encoded) = try roundTrip(d, .topK(density: 0.02), residual: residual)
            residual = encoded.residual
            XCTAssertEqual(residual?.count, n)
            let flatDelta = selection.trained.flatMap { d.view($0).array }, flatSent = selection.trained.flatMap { out.view($0).array }
            for i in 0..<n {
                deltas[i] += flatDelta[i]
                sent[i] += flatSent[i]
                if flatSent[i] != 0 { everSent.insert(i) }
            }
            for i in 0..<n { XCTAssertEqual(sent[i] + residual![i], deltas[i], "value \(i): sent + residual = Σ delta") }
        }
        XCTAssertGreaterThan(everSent.count, UpdateCompression.topKCount(density: 0.02, of: n), "the residual brings other coordinates up")
    }

    // MARK: Hostile files

    func encodedFile(_ compression: UpdateCompression) throws -> (UpdatePipeline, [UInt8]) {
        let pipeline = UpdatePipeline(selection: selection, compression: compression)
        return (pipeline, try CompressedUpdateFile.encode(delta(), pipeline: pipeline).bytes)
    }

    func assertRefused(_ bytes: [UInt8], _ pipeline: UpdatePipeline, field: String, _ line: UInt = #line) {
        let out = ParameterBuffer(layout: layout)
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try CompressedUpdateFile.decode($0, pipeline: pipeline, into: out) }, line: line) { error in
            XCTAssertEqual((error as? UpdateDecodingError)?.field, field, "\(error)", line: line)
        }
    }

    func put<T: FixedWidthInteger>(_ v: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    func testHostileFilesAreRefusedNamingTheField() throws {
        let (int8, good) = try encodedFile(.int8)
        let body = CompressedUpdateFile.headerBytes(int8.transforms)
        var b = good; b[0] = UInt8(ascii: "X")
        assertRefused(b, int8, field: "magic")
        b = good; put(UInt16(2), at: 4, in: &b)
        assertRefused(b, int8, field: "format")
        b = good; put(UInt16(60_000), at: 6, in: &b)
        assertRefused(b, int8, field: "header length")
        assertRefused(Array(good.prefix(12)), int8, field: "header length")
        b = good; b[9] = 0  // a transform name of no bytes
        assertRefused(b, int8, field: "transform 0 name")
        assertRefused(Array(good.prefix(body + 5)), int8, field: "body")
        // An update compressed otherwise than the round's plan says.
        let float16 = UpdatePipeline(selection: selection, compression: .float16)
        assertRefused(good, float16, field: "transforms")
        // A NaN or negative row scale (the first 2-D tensor's third row).
        b = good; put(Float.nan.bitPattern, at: body + 8, in: &b)
        assertRefused(b, int8, field: "layer.weight scale[2]")
        b = good; put((-1 as Float).bitPattern, at: body, in: &b)
        assertRefused(b, int8, field: "layer.weight scale[0]")
        // Tensor and value counts at the end of the header.
        b = good; put(UInt32(9), at: body - 12, in: &b)
        assertRefused(b, int8, field: "tensors")
        b = good; put(UInt64(1) << 40, at: body - 8, in: &b)
        assertRefused(b, int8, field: "values")

        let (topk, top) = try encodedFile(.topK(density: 0.01))
        let k = topk.topKCount!, start = CompressedUpdateFile.headerBytes(topk.transforms)
        b = top; put(UInt64(k + 1), at: start, in: &b)
        assertRefused(b, topk, field: "topk.k")
        b = top; put(UInt32(0), at: start + 8 + 4 * 3, in: &b)  // index 3 not above index 2
        assertRefused(b, topk, field: "topk.indices[3]")
        b = top; put(UInt32(selection.trainedCount), at: start + 8 + 4 * (k - 1), in: &b)
        assertRefused(b, topk, field: "topk.indices[\(k - 1)]")
        b = top; put(Float.infinity.bitPattern, at: start + 8 + 4 * k + 4, in: &b)
        assertRefused(b, topk, field: "topk.values[1]")
        // Another density is another transform.
        assertRefused(top, UpdatePipeline(selection: selection, compression: .topK(density: 0.02)), field: "transforms")

        let (half, h) = try encodedFile(.float16)
        b = h; put(UInt16(0x7C00), at: CompressedUpdateFile.headerBytes(half.transforms) + 2, in: &b)
        assertRefused(b, half, field: "layer.weight[1]")
    }

    /// The file reader checks the size before reading, and names the file.
    func testReadRefusesAFileOfAnotherSize() throws {
        let (pipeline, bytes) = try encodedFile(.int8)
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("u.delta")
        try Data(bytes + [0]).write(to: url)
        XCTAssertThrowsError(try pipeline.read(url, into: ParameterBuffer(layout: layout))) {
            XCTAssertTrue("\($0)".contains("\(bytes.count + 1) bytes, expected \(bytes.count)"), "\($0)")
        }
        try Data(bytes).write(to: url)
        let out = ParameterBuffer(layout: layout)
        try pipeline.read(url, into: out)
        XCTAssertNotEqual(out.values.filter { $0 != 0 }.count, 0)
    }

    /// Validation sees the decoded values: a decoded int8 update over the norm bound is refused.
    func testValidatorJudgesDecodedValues() throws {
        let (out, _) = try roundTrip(delta(), .int8)
        let norm = DeltaMath.norm(out.buffer)
        let validator = UpdateValidator(layout: layout, round: 1, baseVersion: "v0", maxNorm: norm * 0.9)
        guard case .failure(.normTooLarge(let n, _)) = validator.validate(update(out)) else { return XCTFail("over the bound") }
        XCTAssertEqual(n, norm)
        XCTAssertNoThrow(try UpdateValidator(layout: layout, round: 1, baseVersion: "v0", maxNorm: norm * 1.1).validate(update(out)).get())
    }

    func testEncoderRefusesWhatItCannotSend() {
        let d = delta()
        d.buffer[1000] = 1e6  // beyond float16
        XCTAssertThrowsError(try CompressedUpdateFile.encode(d, pipeline: UpdatePipeline(selection: selection, compression: .float16)))
        d.buffer[1000] = .nan
        XCTAssertThrowsError(try CompressedUpdateFile.encode(d, pipeline: UpdatePipeline(selection: selection, compression: .int8)))
        XCTAssertThrowsError(try CompressedUpdateFile.encode(d, pipeline: UpdatePipeline(selection: selection, compression: .topK(density: 0.1))))
    }

    // MARK: The residual

    func testResidualSurvivesOnDiskPrivatelyAndIsDroppedWhenItCannotBelong() throws {
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("topk-residual.bin")
        XCTAssertNil(try TopKResidual.load(from: url))
        let key = TopKResidual.Key(federation: "f", selection: selection)
        let residual = TopKResidual(key: key, round: 3, baseVersion: "v3", values: (0..<selection.trainedCount).map { Float($0) * 1e-3 })
        try residual.save(to: url)
        XCTAssertEqual(try TopKResidual.load(from: url), residual)
        let mode = try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? NSNumber
        XCTAssertEqual(mode?.intValue, 0o600)

        XCTAssertNil(residual.unusable(for: key, round: 4, lineage: ["v4", "v3", "v0"]))
        XCTAssertNil(residual.unusable(for: key, round: 9, lineage: ["v9", "v3"]), "a school that missed rounds keeps it")
        XCTAssertNotNil(residual.unusable(for: TopKResidual.Key(federation: "g", selection: selection), round: 4, lineage: ["v3"]))
        XCTAssertNotNil(residual.unusable(for: TopKResidual.Key(federation: "f", selection: TensorSelection.all(layout)), round: 4, lineage: ["v3"]))
        XCTAssertNotNil(residual.unusable(for: key, round: 3, lineage: ["v3"]), "not after the round that left it")
        XCTAssertNotNil(residual.unusable(for: key, round: 3 + TopKResidual.maxAgeRounds + 1, lineage: ["v3"]), "too old")
        XCTAssertNotNil(residual.unusable(for: key, round: 4, lineage: ["v2", "v0"]), "a rollback past its base")

        // A damaged file is an error, not a crash.
        var bytes = try Data(contentsOf: url)
        bytes.removeLast(3)
        try bytes.write(to: url)
        XCTAssertThrowsError(try TopKResidual.load(from: url))
    }
}

/// Version patches (issue 13, item 3): lossless, bounded, and refused when they do not fit.
final class VersionPatchTests: XCTestCase {
    func testPatchRebuildsTheNewFileExactlyAndRefusesBadPatches() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pando-patch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SplitMix64(seed: 5)
        var old = (0..<100_003).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var new = old
        for i in 40_000..<42_000 { new[i] = new[i] &+ 1 }  // a changed tensor
        for i in stride(from: 90_000, to: 90_100, by: 7) { new[i] ^= 0x5A }  // scattered changes
        new[100_002] = new[100_002] &+ 3  // the last, partial word
        let a = dir.appendingPathComponent("a"), b = dir.appendingPathComponent("b"), p = dir.appendingPathComponent("p"), out = dir.appendingPathComponent("out")
        try Data(old).write(to: a)
        try Data(new).write(to: b)
        let size = try XCTUnwrap(try VersionPatch.make(from: a, to: b, patch: p))
        XCTAssertLessThan(size, 3_000, "only the changed bytes travel")
        try VersionPatch.apply(p, to: a, writing: out)
        XCTAssertEqual(try Data(contentsOf: out), Data(new))
        // A patch for another file size, a range outside the file, truncation: refused.
        old.append(0)
        try Data(old).write(to: a)
        XCTAssertThrowsError(try VersionPatch.apply(p, to: a, writing: out))
        old.removeLast()
        try Data(old).write(to: a)
        var bytes = [UInt8](try Data(contentsOf: p))
        bytes[24 ..< 32] = ArraySlice(withUnsafeBytes(of: UInt64(99_999).littleEndian, Array.init))  // first range's offset near the end
        try Data(bytes).write(to: p)
        XCTAssertThrowsError(try VersionPatch.apply(p, to: a, writing: out)) { XCTAssertTrue("\($0)".contains("outside the file") || "\($0)".contains("out of order"), "\($0)") }
        try Data(bytes.prefix(30)).write(to: p)
        XCTAssertThrowsError(try VersionPatch.apply(p, to: a, writing: out))
        // Files of different sizes (another layout) get no patch.
        try Data(old + [1]).write(to: b)
        XCTAssertNil(try VersionPatch.make(from: a, to: b, patch: p))
    }
}
