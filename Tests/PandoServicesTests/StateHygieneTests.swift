import Foundation
import PandoLedger
@testable import PandoServices
import PandoTransport
import XCTest

/// What the coordinator and the schools leave on disk (issue 17, items 10, 12 and the low items).
extension EndToEndTests {
    /// West's link drops in the middle of its upload and west stays away: the coordinator leaves
    /// it out and commits, and once the round has ended its partial upload is gone from incoming/.
    func testPartialUploadOfAFinishedRoundIsRemoved() async throws {
        let (federation, state, _) = try oneRoundFederation(prefix: "pando-e2e-partial")
        federation.coordinator.reconnectGrace = .milliseconds(500)
        let incoming = state.appendingPathComponent("incoming")
        final class Link: @unchecked Sendable {
            let lock = NSLock()
            var connection: PandoConnection?
            var partialSeen = false
        }
        let link = Link()
        federation.prepareAgent = { id, agent in
            guard id == "west" else { return }
            agent.onAssignment = { _, conn in link.lock.withLock { link.connection = conn } }
            agent.uploadPacing = { _, _ in
                let conn = link.lock.withLock { () -> PandoConnection? in
                    defer { link.connection = nil }
                    link.partialSeen = FileManager.default.fileExists(atPath: incoming.appendingPathComponent("r1-west.delta.partial").path)
                    return link.connection
                }
                guard let conn else { return }
                conn.close()
                try? await Task.sleep(for: .seconds(600))  // away until the run ends
            }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed)
        XCTAssertEqual(Array(report.leftOut.keys), ["west"], "\(report.leftOut)")
        XCTAssertTrue(link.lock.withLock { link.partialSeen }, "the cut upload left a partial file while the round was open")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: incoming.path), [], "nothing of round 1 is left in incoming/")
    }
}
