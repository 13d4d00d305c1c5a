import Foundation
@testable import PandoFederation
import PandoEngine
import PandoLedger
import XCTest

final class WireHashTests: XCTestCase {
    /// The hash a school logs and the coordinator records is over the bytes of the update file.
    func testWireHashIsTheSHA256OfTheLittleEndianFloat32Bytes() throws {
        let delta = buffer(smallLayout(), (0..<12).map { Float($0) * 0.25 - 1 })
        var bytes = Data()
        for v in delta.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        let u = update(delta)
        XCTAssertEqual(bytes.count, u.wireBytes)
        XCTAssertEqual(u.wireSHA256, Digest.sha256(bytes))
        // UpdateFile writes exactly those bytes and reads them back.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("pando-update-\(UUID().uuidString).delta")
        defer { try? FileManager.default.removeItem(at: url) }
        try UpdateFile.write(delta, to: url)
        XCTAssertEqual(try Data(contentsOf: url), bytes)
        let mode = try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? NSNumber
        XCTAssertEqual(mode?.intValue, 0o600, "a delta is derived from a school's data: its owner's only")
        let back = ParameterBuffer(layout: delta.layout)
        try UpdateFile.read(url, into: back)
        XCTAssertEqual(back.values, delta.values)
        let short = ParameterBuffer(layout: smallLayout([("w", [5])]))
        XCTAssertThrowsError(try UpdateFile.read(url, into: short)) { XCTAssertTrue("\($0)".contains("48 bytes, expected 20"), "\($0)") }
    }
}
