import Foundation
import NIOConcurrencyHelpers
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// Downloads as differences (issue 13, item 3): after the first round each school fetches the
/// bytes that changed from the version it holds and rebuilds the new version exactly.
final class VersionPatchFederationTests: XCTestCase {
    func testSchoolsRebuildNewVersionsFromPatches() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-patch")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.quorum = 3
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("patch"))
        let fetched = NIOLockedValueBox<[UInt64]>([])
        federation.onSchoolEvent = { _, event in
            if case .fetched(_, let bytes, let cached) = event, !cached { fetched.withLockedValue { $0.append(bytes) } }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.map(\.committed), [true, true])
        XCTAssertEqual(reports.map(\.evaluatedSchools.count), [3, 3], "every school scored each new version it rebuilt")
        let full = UInt64((try FileManager.default.attributesOfItem(atPath: state.appendingPathComponent("versions/\(reports[0].baseVersion)/model.safetensors").path)[.size] as? Int) ?? 0)
        let sizes = fetched.withLockedValue { $0 }
        // Round 1's base is fetched whole; each later version (round 1's for evaluation, round 2's) by patch.
        XCTAssertEqual(sizes.filter { $0 >= full }.count, 3, "\(sizes) against \(full)")
        XCTAssertEqual(sizes.filter { $0 < full * 9 / 10 }.count, 6, "\(sizes) against \(full)")
        let patches = try FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("patches").path)
        XCTAssertEqual(patches.count, 2)
        XCTAssertGreaterThan(reports[0].bytesDown, reports[1].bytesDown, "round 2 moved patches only")
    }
}
