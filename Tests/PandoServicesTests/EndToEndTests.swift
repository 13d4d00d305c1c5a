import Foundation
import Logging
import NIOCore
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTransport
import XCTest

/// Coordinator and three schools over mutual TLS on loopback (in this process), tiny model.
final class EndToEndTests: XCTestCase {
    /// Copies of the deltas each school offered, keyed "<school>-update-r<round>.delta".
    final class Captured: @unchecked Sendable {
        let folder: URL
        init(folder: URL) { self.folder = folder }
        /// The example-weighted mean of the three schools' deltas of `round` (north 60, south 90, west 40).
        func meanDelta(round: Int, layout: ParameterLayout) throws -> [Double] {
            let sizes = ["north": 60.0, "south": 90.0, "west": 40.0]
            var deltas: [String: ParameterBuffer] = [:]
            for s in sizes.keys { deltas[s] = try delta(s, round: round, layout: layout) }
            return (0..<layout.count).map { i in sizes.reduce(0.0) { $0 + $1.value * Double(deltas[$1.key]!.buffer[i]) } / 190 }
        }
        func delta(_ school: String, round: Int, layout: ParameterLayout) throws -> ParameterBuffer {
            let b = ParameterBuffer(layout: layout)
            try UpdateFile.read(folder.appendingPathComponent("\(school)-update-r\(round).delta"), into: b,
                                selection: TensorSelection(layout: layout, frozen: TensorSelection.embeddingTables))
            return b
        }
    }

    /// Runs a loopback federation; with `work` from an earlier run, a new coordinator continues its state.
    func run(strategy: StrategyChoice, rounds: Int = 2, canary: String = "", work: URL? = nil,
             tap: (@Sendable (ByteBuffer) -> Void)? = nil) async throws -> (reports: [FederatedRoundReport], state: URL, captured: Captured,
                                                                           layout: ParameterLayout, logs: LogCapture, work: URL) {
        let work = try work ?? TestFixtures.temporaryDirectory(prefix: "pando-e2e")
        let state = work.appendingPathComponent("state")
        let model = try TestFixtures.tinyModelFolder()
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: Federation.configuration(model: model, state: state, rounds: rounds, strategy: strategy),
                                                schools: try Federation.schools(canary: canary), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        let captured = Captured(folder: work.appendingPathComponent("captured"))
        try FileManager.default.createDirectory(at: captured.folder, withIntermediateDirectories: true)
        federation.prepareAgent = { id, agent in
            agent.tamper = { url in
                try FileManager.default.copyItem(at: url, to: captured.folder.appendingPathComponent("\(id)-\(url.lastPathComponent)"))
            }
            if let tap { agent.client.plaintextTap.withLockedValue { $0 = tap } }
        }
        let reports = try await federation.run()
        let layout = try BertModel.load(from: model, head: ClassifierHead(objective: TaskKind.classification.objective, labels: Federation.labels)).0.layout
        return (reports, state, captured, layout, logs, work)
    }

    func weights(_ state: URL, _ version: String) throws -> ParameterBuffer {
        try BertModel.load(from: state.appendingPathComponent("versions/\(version)"),
                           head: ClassifierHead(objective: TaskKind.classification.objective, labels: Federation.labels)).0.parameters
    }

    func verify(_ state: URL) throws -> VerificationReport {
        let logs = try FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent("schools").path)
            .filter { $0.hasSuffix(".jsonl") }.map { state.appendingPathComponent("schools/\($0)") }
        XCTAssertEqual(logs.count, 3, "one log per school")
        return AuditVerifier.verify(log: state.appendingPathComponent("audit.jsonl"),
                                    key: try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub")),
                                    clientLogs: logs, checkpoints: state)
    }

    func testFedAvgRoundsOverTLSMatchTheHandComputedWeightedMean() async throws {
        let r = try await run(strategy: StrategyChoice(name: .fedavg))
        XCTAssertEqual(r.reports.count, 2)
        let sizes = ["north": 60, "south": 90, "west": 40]
        for report in r.reports {
            XCTAssertTrue(report.committed, "round \(report.round): \(report.leftOut)")
            XCTAssertEqual(report.accepted.sorted(), ["north", "south", "west"])
            XCTAssertEqual(report.examples, 190)
            let trained = TensorSelection(layout: r.layout, frozen: TensorSelection.embeddingTables).trainedCount
            XCTAssertEqual(report.bytesUp, UInt64(3 * 4 * trained), "three deltas of 4 bytes per trained parameter (the embedding tables stay home)")
            XCTAssertEqual(report.evaluatedSchools, ["north", "south", "west"])
            XCTAssertEqual(report.evaluationExamples, 60)
            XCTAssertNotNil(report.evaluation["accuracy"])
            // The committed version is base + Σ nᵢ Δᵢ / Σ nᵢ of the deltas the schools sent.
            let base = try weights(r.state, report.baseVersion), new = try weights(r.state, report.version)
            var expected = [Double](repeating: 0, count: r.layout.count)
            for (school, n) in sizes {
                let d = try r.captured.delta(school, round: report.round, layout: r.layout)
                for i in 0..<r.layout.count { expected[i] += Double(n) * Double(d.buffer[i]) / 190 }
            }
            var worst = 0.0
            for i in 0..<r.layout.count { worst = max(worst, abs(Double(new.buffer[i]) - Double(base.buffer[i]) - expected[i])) }
            XCTAssertLessThan(worst, 1e-6, "round \(report.round)")
        }
        XCTAssertEqual(r.reports[1].baseVersion, r.reports[0].version, "round 2 trains from round 1's version")
        // The federation learns the separable task: schools' validation accuracy and loss improve.
        let first = r.reports[0].evaluation, second = r.reports[1].evaluation
        print("federated validation accuracy by round: \(first["accuracy"] ?? .nan), \(second["accuracy"] ?? .nan); loss \(first["loss"] ?? .nan), \(second["loss"] ?? .nan)")
        XCTAssertLessThan(second["loss"]!, first["loss"]!)
        XCTAssertLessThan(r.reports[1].trainLoss, r.reports[0].trainLoss)
        XCTAssertGreaterThanOrEqual(second["accuracy"]!, 0.8)
        // Bytes down: every school fetched each new version once (train in round 1: base; eval: v1; round 2 cached v1; eval: v2).
        XCTAssertGreaterThan(r.reports[0].bytesDown, 0)
        let report = try verify(r.state)
        XCTAssertTrue(report.isValid, "\(report.problems)")
        XCTAssertEqual(report.clientEntriesChecked, 6)
    }

    /// One school sends a delta with a NaN, another is too slow for the deadline: each is
    /// left out with its reason on record, and the round commits with the quorum of the rest.
    func testInvalidAndLateSchoolsAreLeftOutAndTheRoundCommits() async throws {
        for fault in ["invalid", "late"] {
            let work = try TestFixtures.temporaryDirectory(prefix: "pando-e2e-\(fault)")
            let state = work.appendingPathComponent("state")
            let model = try TestFixtures.tinyModelFolder()
            var config = Federation.configuration(model: model, state: state, rounds: 1)
            config.rounds.roundDeadline = .seconds(4)
            config.rounds.federatedEvaluation = false
            let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                    workFolder: work.appendingPathComponent("run"),
                                                    schoolLogFolder: state.appendingPathComponent("schools"),
                                                    logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
            federation.prepareAgent = { id, agent in
                guard id == "west" else { return }
                agent.tamper = { url in
                    if fault == "late" { Thread.sleep(forTimeInterval: 6); return }
                    let h = try FileHandle(forWritingTo: url)
                    defer { try? h.close() }
                    try h.seek(toOffset: 40)
                    try h.write(contentsOf: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { Data($0) })
                }
            }
            let reports = try await federation.run()
            let report = try XCTUnwrap(reports.first)
            XCTAssertTrue(report.committed, "\(fault): \(report.leftOut)")
            XCTAssertEqual(report.accepted.sorted(), ["north", "south"], fault)
            let reason = try XCTUnwrap(report.leftOut["west"], fault)
            XCTAssertTrue(fault == "late" ? reason.contains("deadline") : reason.contains("non-finite") || reason.contains("NaN"), reason)
            let audit = try String(contentsOf: state.appendingPathComponent("audit.jsonl"), encoding: .utf8)
            XCTAssertTrue(audit.contains("\"updateRejected\"") && audit.contains("\"school\":\"west\""), "the rejection is on record")
            let verification = try verify(state)
            XCTAssertTrue(verification.isValid, "\(fault): \(verification.problems)")
        }
    }

    /// One round without federated evaluation, for tests that interfere with a school's link.
    func oneRoundFederation(prefix: String) throws -> (LoopbackFederation, state: URL, logs: LogCapture) {
        let work = try TestFixtures.temporaryDirectory(prefix: prefix)
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        return (federation, state, logs)
    }

    /// West's link drops just after its assignment arrives (before it fetches anything): it
    /// reconnects, the coordinator sends the assignment again, and the round has all three.
    func testSchoolReconnectingMidRoundGetsItsAssignmentAgain() async throws {
        let (federation, state, logs) = try oneRoundFederation(prefix: "pando-e2e-reconnect")
        let cuts = FrameBytes()
        federation.prepareAgent = { id, agent in
            guard id == "west" else { return }
            agent.onAssignment = { _, conn in
                if cuts.count == 0 { cuts.add(ByteBuffer(bytes: [1])); conn.close() }
            }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertEqual(cuts.count, 1, "the link was cut once")
        XCTAssertTrue(report.committed)
        XCTAssertEqual(report.accepted.sorted(), ["north", "south", "west"], "\(report.leftOut)")
        XCTAssertTrue(try verify(state).isValid)
    }

    func testFedAdamFirstRoundFollowsItsFormula() async throws {
        var choice = StrategyChoice(name: .fedadam)
        choice.serverLearningRate = 1e-2
        let r = try await run(strategy: choice, rounds: 1)
        let report = try XCTUnwrap(r.reports.first)
        XCTAssertTrue(report.committed)
        let base = try weights(r.state, report.baseVersion), new = try weights(r.state, report.version)
        let sizes = ["north": 60.0, "south": 90.0, "west": 40.0]
        var worst = 0.0
        var deltas: [String: ParameterBuffer] = [:]
        for s in sizes.keys { deltas[s] = try r.captured.delta(s, round: 1, layout: r.layout) }
        for i in 0..<r.layout.count {
            let g = sizes.reduce(0.0) { $0 + $1.value * Double(deltas[$1.key]!.buffer[i]) } / 190
            // m₀ = 0, v₀ = τ²: m = (1 − β1) g, v = β2 τ² + (1 − β2) g², w += η m / (√v + τ)
            let m = 0.1 * g, v = 0.99 * 1e-12 + 0.01 * g * g
            let step = 1e-2 * m / (v.squareRoot() + 1e-6)
            worst = max(worst, abs(Double(new.buffer[i]) - Double(base.buffer[i]) - step))
        }
        XCTAssertLessThan(worst, 1e-6)
    }

    /// West's link drops at its assignment, comes back, and drops again (during its upload)
    /// just before the first drop's grace period ends; it is back within the second one, so
    /// it is not left out: a reconnection cancels the earlier drop's timer.
    func testEachDropGetsAFullGracePeriod() async throws {
        let (federation, state, logs) = try oneRoundFederation(prefix: "pando-e2e-grace")
        let grace = 2.0
        federation.coordinator.reconnectGrace = .milliseconds(Int64(grace * 1000))
        final class Link: @unchecked Sendable {
            let lock = NSLock()
            var firstCut: ContinuousClock.Instant?
            var connection: PandoConnection?
            var cuts = 0
        }
        let link = Link()
        federation.prepareAgent = { id, agent in
            guard id == "west" else { return }
            agent.onAssignment = { _, conn in
                link.lock.withLock {
                    link.connection = conn
                    if link.cuts == 0 { link.cuts = 1; link.firstCut = .now; conn.close() }
                }
            }
            agent.uploadPacing = { _, _ in
                // Second cut 0.1 s before the first grace period ends; the client needs at
                // least a quarter second to dial again, so it is away when that timer fires.
                let (start, conn) = link.lock.withLock { () -> (ContinuousClock.Instant?, PandoConnection?) in
                    guard link.cuts == 1 else { return (nil, nil) }
                    link.cuts = 2
                    return (link.firstCut, link.connection)
                }
                guard let start, let conn else { return }
                try? await Task.sleep(until: start + .milliseconds(Int64((grace - 0.1) * 1000)), clock: .continuous)
                conn.close()
            }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertEqual(link.lock.withLock { link.cuts }, 2, "the link was cut twice")
        XCTAssertTrue(report.committed)
        XCTAssertEqual(report.accepted.sorted(), ["north", "south", "west"], "\(report.leftOut)")
        XCTAssertFalse(logs.contains("protocol violation"), "the re-sent assignment waits for the upload to finish")
        XCTAssertEqual(logs.lines.filter { $0.contains("train from version") && $0.contains("west") }.count, 2,
                       "west trains once: the assignment cut before training, then the one it trained on (its repeat is answered without training)")
        XCTAssertTrue(try verify(state).isValid)
    }

    /// FedAdam's moments are stored with each version: round 2, run by a new coordinator on
    /// the same state folder, continues m and v from round 1 (fresh moments give another step).
    func testFedAdamContinuesItsMomentsAcrossACoordinatorRestart() async throws {
        var choice = StrategyChoice(name: .fedadam)
        choice.serverLearningRate = 1e-2
        let first = try await run(strategy: choice, rounds: 1)
        let second = try await run(strategy: choice, rounds: 1, work: first.work)
        let r1 = try XCTUnwrap(first.reports.first), r2 = try XCTUnwrap(second.reports.first)
        XCTAssertTrue(r1.committed && r2.committed)
        XCTAssertEqual(r2.round, 2)
        XCTAssertEqual(r2.baseVersion, r1.version)
        XCTAssertTrue(second.logs.contains("fedadam server state: restored from the head version"), "the restart says so")
        let g1 = try second.captured.meanDelta(round: 1, layout: second.layout)
        let g2 = try second.captured.meanDelta(round: 2, layout: second.layout)
        let w1 = try weights(second.state, r1.version), w2 = try weights(second.state, r2.version)
        var continued = 0.0, fresh = 0.0
        for i in g1.indices {
            let m1 = 0.1 * g1[i], v1 = 0.99 * 1e-12 + 0.01 * g1[i] * g1[i]
            let m2 = 0.9 * m1 + 0.1 * g2[i], v2 = 0.99 * v1 + 0.01 * g2[i] * g2[i]
            let moved = Double(w2.buffer[i]) - Double(w1.buffer[i])
            continued = max(continued, abs(moved - 1e-2 * m2 / (v2.squareRoot() + 1e-6)))
            let vFresh = 0.99 * 1e-12 + 0.01 * g2[i] * g2[i]
            fresh = max(fresh, abs(moved - 1e-2 * 0.1 * g2[i] / (vFresh.squareRoot() + 1e-6)))
        }
        XCTAssertLessThan(continued, 1e-6, "round 2 continues round 1's moments")
        XCTAssertGreaterThan(fresh, 1e-4, "fresh moments would have moved the weights differently")
        XCTAssertTrue(try verify(second.state).isValid)
        // An exported version is a plain Hugging Face folder: the server state stays behind.
        let export = second.work.appendingPathComponent("export")
        try CheckpointStore(folder: second.state.appendingPathComponent("versions")).export(r2.version, to: export)
        let exported = try FileManager.default.contentsOfDirectory(atPath: export.path)
        XCTAssertTrue(exported.contains("model.safetensors"))
        XCTAssertFalse(exported.contains(FederationLedger.strategyStateFile))
        XCTAssertTrue(FileManager.default.fileExists(
            atPath: second.state.appendingPathComponent("versions/\(r2.version)/\(FederationLedger.strategyStateFile)").path))
        // Other server settings: those moments are not this optimizer's, so it starts fresh.
        choice.serverLearningRate = 2e-2
        let third = try await run(strategy: choice, rounds: 1, work: first.work)
        XCTAssertTrue(third.reports.first?.committed ?? false)
        XCTAssertTrue(third.logs.contains("fedadam server state: fresh"), "new settings start from fresh moments")
    }

    /// FedAvgM's velocity is stored with each version: round 2, run by a new coordinator on the
    /// same state folder, moves the weights by η·(β·Δ₁ + Δ₂), not by a fresh η·Δ₂.
    func testFedAvgMContinuesItsVelocityAcrossACoordinatorRestart() async throws {
        var choice = StrategyChoice(name: .fedavgm)
        choice.serverLearningRate = 0.5
        choice.momentum = 0.8
        let first = try await run(strategy: choice, rounds: 1)
        let second = try await run(strategy: choice, rounds: 1, work: first.work)
        let r1 = try XCTUnwrap(first.reports.first), r2 = try XCTUnwrap(second.reports.first)
        XCTAssertTrue(r1.committed && r2.committed)
        XCTAssertEqual(r2.baseVersion, r1.version)
        XCTAssertTrue(second.logs.contains("fedavgm server state: restored from the head version"), "the restart says so")
        let g1 = try second.captured.meanDelta(round: 1, layout: second.layout)
        let g2 = try second.captured.meanDelta(round: 2, layout: second.layout)
        let w0 = try weights(first.state, r1.baseVersion), w1 = try weights(second.state, r1.version), w2 = try weights(second.state, r2.version)
        var first1 = 0.0, continued = 0.0, fresh = 0.0
        for i in g1.indices {
            first1 = max(first1, abs(Double(w1.buffer[i]) - Double(w0.buffer[i]) - 0.5 * g1[i]))
            let moved = Double(w2.buffer[i]) - Double(w1.buffer[i])
            continued = max(continued, abs(moved - 0.5 * (0.8 * g1[i] + g2[i])))
            fresh = max(fresh, abs(moved - 0.5 * g2[i]))
        }
        XCTAssertLessThan(first1, 1e-6, "round 1: v = Δ₁")
        XCTAssertLessThan(continued, 1e-6, "round 2 continues round 1's velocity")
        XCTAssertGreaterThan(fresh, 1e-5, "a fresh velocity would have moved the weights differently")
        XCTAssertTrue(try verify(second.state).isValid)
    }

    /// `round_decay: linear` over 2 rounds: round 1 trains at ¾ of the rate, round 2 at ¼
    /// (the midpoints of a linear decay), and each round's record says so.
    func testRoundDecayLowersTheRateEachRoundAndTheAuditRecordsIt() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-e2e")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.learningRateDecay = .linear
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(canary: ""),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("e2e"))
        let reports = try await federation.run()
        XCTAssertEqual(reports.map(\.committed), [true, true])
        let audit = try String(contentsOf: state.appendingPathComponent("audit.jsonl"), encoding: .utf8)
        let rates = audit.split(separator: "\n").filter { $0.contains("\"roundStarted\"") }.map { line -> String in
            let tail = line.components(separatedBy: "\"localLearningRate\":").dropFirst().first ?? ""
            return String(tail.prefix { $0 != "," && $0 != "}" })
        }
        XCTAssertEqual(rates, ["0.00075", "0.00025"], "each round's record carries the decayed rate")
        XCTAssertTrue(try verify(state).isValid)
    }

    func testFedProxTellsSchoolsMuAndAveragesOnTheServer() async throws {
        var choice = StrategyChoice(name: .fedprox)
        choice.mu = 0.05
        let r = try await run(strategy: choice, rounds: 1)
        let report = try XCTUnwrap(r.reports.first)
        XCTAssertTrue(report.committed)
        let audit = try String(contentsOf: r.state.appendingPathComponent("audit.jsonl"), encoding: .utf8)
        XCTAssertTrue(audit.contains("\"proximalMu\":0.05"), "the round record carries μ")
        let base = try weights(r.state, report.baseVersion), new = try weights(r.state, report.version)
        var worst = 0.0
        let sizes = ["north": 60.0, "south": 90.0, "west": 40.0]
        var deltas: [String: ParameterBuffer] = [:]
        for s in sizes.keys { deltas[s] = try r.captured.delta(s, round: 1, layout: r.layout) }
        for i in 0..<r.layout.count {
            let g = sizes.reduce(0.0) { $0 + $1.value * Double(deltas[$1.key]!.buffer[i]) } / 190
            worst = max(worst, abs(Double(new.buffer[i]) - Double(base.buffer[i]) - g))
        }
        XCTAssertLessThan(worst, 1e-6)
    }

    /// A unique string planted in every school's texts never appears in any byte a school
    /// writes to its connection (tapped before encryption) nor in any coordinator file.
    func testCanaryNeverLeavesTheSchools() async throws {
        let canary = "zebracanary7781"
        let frames = FrameBytes()
        let r = try await run(strategy: StrategyChoice(name: .fedavg), rounds: 1, canary: canary, tap: { frames.add($0) })
        XCTAssertTrue(r.reports.first?.committed ?? false)
        XCTAssertGreaterThan(frames.count, 3 * 4 * TensorSelection(layout: r.layout, frozen: TensorSelection.embeddingTables).trainedCount,
                             "the tap saw the uploads")
        let needle = Array(canary.utf8)
        XCTAssertFalse(frames.contains(needle), "canary on the wire")
        // Every file under the coordinator's state folder.
        var checked = 0
        let e = FileManager.default.enumerator(at: r.state, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in e where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            let data = try Data(contentsOf: url)
            XCTAssertNil(data.firstRange(of: Data(needle)), "canary in \(url.path)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 5)
        XCTAssertFalse(r.logs.contains(canary), "canary in a log line")
    }
}

/// Plaintext bytes a tap saw (kept whole so a string split across writes is still found).
final class FrameBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    func add(_ b: ByteBuffer) { lock.lock(); bytes += b.readableBytesView; lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return bytes.count }
    func contains(_ needle: [UInt8]) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard bytes.count >= needle.count else { return false }
        return Data(bytes).firstRange(of: Data(needle)) != nil
    }
}
