import Foundation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
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

    /// Flips the last byte of `file` (inside the tensor data: the file still loads).
    static func corrupt(_ file: URL) throws {
        var bytes = [UInt8](try Data(contentsOf: file))
        bytes[bytes.count - 1] ^= 0x01
        try Data(bytes).write(to: file)
    }

    /// A two-round federation in a fresh folder; `evaluation` as configured.
    func twoRoundFederation(prefix: String, evaluation: Bool) throws -> (LoopbackFederation, state: URL, work: URL) {
        let work = try TestFixtures.temporaryDirectory(prefix: prefix)
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.federatedEvaluation = evaluation
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("e2e"))
        return (federation, state, work.appendingPathComponent("run"))
    }

    /// A head checkpoint corrupted while the coordinator was down: it refuses to start, naming
    /// the file, instead of loading it and aborting every round when schools reject the download.
    func testCorruptHeadCheckpointIsRefusedAtStart() async throws {
        let first = try await run(strategy: StrategyChoice(), rounds: 1)
        let head = try XCTUnwrap(first.reports.first?.version)
        let file = first.state.appendingPathComponent("versions/\(head)/model.safetensors")
        try Self.corrupt(file)
        do {
            let reports = try await run(strategy: StrategyChoice(), rounds: 1, work: first.work).reports
            XCTFail("the coordinator started from a corrupt head: \(reports.map(\.leftOut))")
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains(file.path) && text.contains("not the version id") && text.contains("pando versions rollback"), text)
        }
        // A corrupt version cannot be made the head either.
        let ledger = try CoordinatorLedger(folder: first.state)
        XCTAssertThrowsError(try ledger.rollback(to: head)) { XCTAssertTrue("\($0)".contains(file.path), "\($0)") }
    }

    /// The head changes on disk while the coordinator runs: round 2 does not serve it; the round
    /// is aborted with the reason and the coordinator stops with an error naming the file.
    func testVersionThatNoLongerMatchesItsIdIsNotServed() async throws {
        let (federation, state, _) = try twoRoundFederation(prefix: "pando-e2e-serve", evaluation: false)
        let assigned = LogCapture()
        federation.onSchoolEvent = { id, event in
            if case .assignment(let round, _) = event { assigned.append("\(id) round \(round)") }
        }
        federation.coordinator.onRound = { report in
            if report.round == 1 { try? Self.corrupt(state.appendingPathComponent("versions/\(report.version)/model.safetensors")) }
        }
        do {
            _ = try await federation.run()
            XCTFail("round 2 ran from a version that no longer matches its id")
        } catch {
            XCTAssertTrue("\(error)".contains("not the version id"), "\(error)")
        }
        XCTAssertFalse(assigned.contains("round 2"), assigned.lines.joined(separator: "\n"))
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let aborted = try XCTUnwrap(records.last { $0.event == .roundAborted })
        XCTAssertEqual(aborted.round, 2)
        XCTAssertTrue(aborted.reason?.contains("the base version is not served") ?? false, aborted.reason ?? "no reason")
    }

    /// Each school's cached copy of the version it evaluated is corrupted before round 2 trains
    /// on it: every school re-hashes its cache, fetches the version again, and the round commits.
    func testCorruptCachedVersionIsFetchedAgain() async throws {
        let (federation, _, run) = try twoRoundFederation(prefix: "pando-e2e-cache", evaluation: true)
        let fetches = LogCapture()
        federation.onSchoolEvent = { id, event in
            if case .fetched(let round, let bytes, let cached) = event { fetches.append("\(id) round \(round) cached \(cached) bytes \(bytes)") }
        }
        federation.coordinator.onRound = { report in
            guard report.round == 1 else { return }
            for school in ["north", "south", "west"] {
                try? Self.corrupt(run.appendingPathComponent("schools/\(school)/cache/versions/\(report.version)/model.safetensors"))
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.map(\.committed), [true, true])
        XCTAssertEqual(Set(reports[0].evaluatedSchools), ["north", "south", "west"], "each school cached version 1 by evaluating it")
        let version = reports[0].version
        for school in ["north", "south", "west"] {
            // Its first fetch of round 2 is for training on version 1 (evaluating version 2 comes after).
            let training = fetches.lines.first { $0.hasPrefix("\(school) round 2 ") } ?? "none"
            XCTAssertTrue(training.hasPrefix("\(school) round 2 cached false") && !training.hasSuffix("bytes 0"), fetches.lines.joined(separator: "\n"))
            let file = run.appendingPathComponent("schools/\(school)/cache/versions/\(version)/model.safetensors")
            XCTAssertEqual(try Digest.sha256(fileAt: file), version)
        }
    }

    /// Everything the coordinator and the schools write (state, versions, uploads, logs, the
    /// CRL number, caches, deltas) is their own alone: files 0600, folders 0700, whatever the
    /// umask. The audit public key is the exception: it is for officers.
    func testStateAndCacheAreOwnerOnly() async throws {
        let r = try await run(strategy: StrategyChoice(), rounds: 1)
        let caches = ["north", "south", "west"].map { r.work.appendingPathComponent("run/schools/\($0)/cache") }
        var checked: [String] = []
        for root in [r.state] + caches {
            let rootMode = try FileManager.default.attributesOfItem(atPath: root.path)[.posixPermissions] as? NSNumber
            XCTAssertEqual(rootMode?.intValue, 0o700, root.path)
            for case let url as URL in try XCTUnwrap(FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)) {
                guard url.pathExtension != "pub" else { continue }
                let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
                let mode = ((attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0) & 0o777
                let folder = attributes[.type] as? FileAttributeType == .typeDirectory
                XCTAssertEqual(mode, folder ? 0o700 : 0o600, "\(url.path) has mode 0\(String(mode, radix: 8))")
                checked.append(url.path.replacingOccurrences(of: root.path + "/", with: ""))
            }
        }
        for expected in ["state.sqlite", "audit.jsonl", "LOCK", "keys/coordinator.key", "incoming", "schools/north.jsonl",
                         Coordinator.crlNumberFile, "crl-number.json", "outgoing"] {
            XCTAssertTrue(checked.contains(expected), "\(expected) not written: \(checked.sorted())")
        }
        XCTAssertEqual(checked.filter { $0.hasPrefix("versions/") && $0.hasSuffix("/model.safetensors") }.count, 2 + 3 * 2,
                       "the coordinator's two versions, and each school's copies (trained on the base, evaluated the new one): \(checked.sorted())")
    }

    /// Every entry of a school's log names the federation its configuration announces.
    func testSchoolLogEntriesNameTheFederation() async throws {
        let r = try await run(strategy: StrategyChoice(), rounds: 1)
        for school in ["north", "south", "west"] {
            let lines = try String(contentsOf: r.state.appendingPathComponent("schools/\(school).jsonl"), encoding: .utf8)
                .split(separator: "\n")
            XCTAssertEqual(lines.filter { $0.contains(#""event":"updateSent""#) }.count, 1, "one update sent; the other lines are what it saw")
            for line in lines { XCTAssertTrue(line.contains(#""federation":"test-federation""#), String(line)) }
        }
        XCTAssertTrue(try verify(r.state).isValid)
    }
}
