import Foundation
import NIOConcurrencyHelpers
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// `weighted-global` over the real services (issue 15, item 6): each school adds its label
/// fractions to its masked update, the coordinator unmasks only their weighted mean, stores it
/// with the version and sends it in the next round's plan, and the audit records it.
final class GlobalClassPriorTests: XCTestCase {
    /// A `weighted-global` federation under secure aggregation (threshold 2), one local epoch a round.
    static func configuration(state: URL, rounds: Int) throws -> CoordinatorConfiguration {
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: rounds)
        config.rounds.federatedEvaluation = false
        config.plan.epochs = 1
        config.plan.classBalance = .weightedGlobal
        var settings = SecureAggregationSettings()
        settings.threshold = 2
        settings.stageDeadline = .seconds(30)
        config.secureAggregation = settings
        return config
    }

    func testTheDistrictPriorComesFromTheSecureSumAndReachesTheNextRound() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-prior")
        let state = work.appendingPathComponent("state")
        var config = try Self.configuration(state: state, rounds: 2)
        config.rounds.quorum = 3
        // Three label mixes: mostly a, mostly b, even.
        let mixes = [("north", 30, 6), ("south", 8, 24), ("west", 20, 20)]
        let schools = try mixes.enumerated().map { i, m in
            let rows = synthetic(count: 120, seed: UInt64(500 + i))
            let picked = Array(rows.filter { $0.label == "a" }.prefix(m.1)) + Array(rows.filter { $0.label == "b" }.prefix(m.2))
            return LoopbackFederation.School(id: m.0, training: try Federation.dataset(picked), validation: nil)
        }
        let logs = state.appendingPathComponent("schools")
        let federation = try LoopbackFederation(configuration: config, schools: schools, workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: logs, logger: LogCapture().logger("prior"))
        let inputs = NIOLockedValueBox<[Int: [String: (values: [Float], weight: UInt32)]]>([:])
        federation.prepareAgent = { id, agent in
            agent.observeSecureInput = { values, weight in
                inputs.withLockedValue { all in
                    let r = all.keys.filter { all[$0]?[id] != nil }.max().map { $0 + 1 } ?? 1
                    all[r, default: [:]][id] = (values, weight)
                }
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.map(\.committed), [true, true], "\(reports.map(\.leftOut))")

        // Each school's masked input ends with its own label fractions…
        let first = try XCTUnwrap(inputs.withLockedValue { $0[1] })
        XCTAssertEqual(first.count, 3)
        for (id, a, b) in mixes {
            let tail = Array(try XCTUnwrap(first[id]).values.suffix(2))
            XCTAssertEqual(tail, [Float(a) / Float(a + b), Float(b) / Float(a + b)], id)
        }
        // …and the coordinator learns only their weighted mean, the district's prior.
        let weights = mixes.map { Double(first[$0.0]!.weight) }
        let fractions = mixes.map { [Double($0.1) / Double($0.1 + $0.2), Double($0.2) / Double($0.1 + $0.2)] }
        let expected = (0..<2).map { c in zip(weights, fractions).reduce(0.0) { $0 + $1.0 * $1.1[c] } / weights.reduce(0, +) }
        let records = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records
        let secure = try XCTUnwrap(records.first { $0.event == .secureAggregation && $0.round == 1 }?.secureAggregation)
        let unmasked = try XCTUnwrap(secure["classPrior"]?.arrayValue?.compactMap(\.doubleValue))
        XCTAssertEqual(unmasked.count, 2)
        for (u, e) in zip(unmasked, expected) { XCTAssertEqual(u, e, accuracy: 1e-6, "fixed-point error only") }

        // Round 1 had no prior; round 2's plan, as recorded and as sent, carries round 1's.
        let ledger = try CoordinatorLedger(folder: state, readOnly: true)
        let rounds = try ledger.rounds()
        XCTAssertNil(rounds[0].strategyParameters["classPrior"])
        XCTAssertEqual(rounds[0].strategyParameters["classBalance"]?.stringValue, "weighted-global")
        XCTAssertTrue(rounds[0].strategyParameters["updateTransforms"]?.stringValue?.contains("append-label-fractions → secagg-mask") ?? false,
                      "\(rounds[0].strategyParameters)")
        let sent = try XCTUnwrap(rounds[1].strategyParameters["classPrior"]?.arrayValue?.compactMap(\.doubleValue))
        for (s, u) in zip(sent, unmasked) { XCTAssertEqual(s, u, accuracy: 1e-12) }
        XCTAssertEqual(sent.reduce(0, +), 1, accuracy: 1e-12)
        XCTAssertEqual(secure["census"]?.intValue, 2, "the audit says the fractions were in this sum")
        let later = try XCTUnwrap(records.first { $0.event == .secureAggregation && $0.round == 2 }?.secureAggregation)
        XCTAssertNil(later["census"] ?? later["classPrior"], "round 2 summed no fractions")
        XCTAssertFalse(rounds[1].strategyParameters["updateTransforms"]?.stringValue?.contains("append-label-fractions") ?? true)
        let second = try XCTUnwrap(inputs.withLockedValue { $0[2] })
        XCTAssertEqual(second.count, 3, "the schools accepted round 2's plan with its prior")
        for (id, _, _) in mixes {
            XCTAssertEqual(second[id]!.values.count, first[id]!.values.count - 2, "\(id): the fractions go into one sum only")
            let text = try Data(contentsOf: logs.appendingPathComponent("\(id).jsonl"))
            let entries = AuditFormat.lines(of: text).lines.compactMap { (try? CanonicalJSON.parse($0.bytes))?.objectValue }
                .filter { $0["event"]?.stringValue == "updateSent" }
            XCTAssertEqual(entries.map { $0["secureAggregation"]?.objectValue?["classCensus"] }, [.bool(true), nil], id)
        }

        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let report = AuditVerifier.verify(log: state.appendingPathComponent("audit.jsonl"), keys: [key],
                                          clientLogs: mixes.map { logs.appendingPathComponent("\($0.0).jsonl") })
        XCTAssertTrue(report.isValid, report.render())
    }

    /// A census whose sum is not a distribution (here one school's masked word for a fraction is
    /// altered in transit) gives no prior; the schools are not asked again, and the next round
    /// says so and weights by each school's own counts.
    func testACensusThatGivesNoPriorIsNotAskedAgain() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-prior-broken")
        let state = work.appendingPathComponent("state")
        var config = try Self.configuration(state: state, rounds: 2)
        config.rounds.quorum = 3
        let capture = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: capture.logger("prior-broken"))
        let tampered = NIOLockedValueBox(false)
        federation.prepareAgent = { id, agent in
            guard id == "north" else { return }
            agent.tamper = { file in
                guard !tampered.withLockedValue({ $0 }) else { return }
                tampered.withLockedValue { $0 = true }
                var bytes = Array(try Data(contentsOf: file))
                let at = bytes.count - 12  // the first of the two fraction words, before the weight slot
                bytes[at + 3] ^= 0x40
                try Data(bytes).write(to: file)
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.map(\.committed), [true, true], "\(reports.map(\.leftOut))")
        let records = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records
        let first = try XCTUnwrap(records.first { $0.event == .secureAggregation && $0.round == 1 }?.secureAggregation)
        XCTAssertEqual(first["census"]?.intValue, 2)
        XCTAssertNil(first["classPrior"], "the altered sum is refused as a prior")
        let rounds = try CoordinatorLedger(folder: state, readOnly: true).rounds()
        XCTAssertEqual(rounds[1].strategyParameters["classBalance"]?.stringValue, "weighted", "\(rounds[1].strategyParameters)")
        XCTAssertNil(rounds[1].strategyParameters["classPrior"])
        XCTAssertTrue(capture.contains("gave no prior"), capture.lines.suffix(20).joined(separator: "\n"))
    }

    /// A school whose own log says its fractions already went into a sum declines to add them to
    /// another: label mixes do not change, so the coordinator could subtract the two sums.
    func testASchoolAddsItsFractionsToOneSumOnly() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-prior-once")
        let state = work.appendingPathComponent("state")
        var config = try Self.configuration(state: state, rounds: 1)
        let logs = state.appendingPathComponent("schools")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        // Round 1 of another federation id: neither the same round number nor a new id opens a second sum.
        var spent = SchoolLogEntry(school: "west", round: 1, baseVersion: String(repeating: "0", count: 64), updateSHA256: String(repeating: "1", count: 64),
                                   wireBytes: 100, examples: 40, federation: "an-earlier-federation")
        spent.secureAggregation = ["classCensus": .bool(true)]
        try SchoolLog(url: logs.appendingPathComponent("west.jsonl")).append(spent)
        config.rounds.minSchools = 4
        config.rounds.quorum = 3
        let east = LoopbackFederation.School(id: "east", training: try Federation.dataset(synthetic(count: 50, seed: 103)), validation: nil)
        let capture = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools() + [east], workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: logs, logger: capture.logger("prior-once"))
        let reports = try await federation.run()
        XCTAssertEqual(reports.count, 1)
        XCTAssertTrue(reports[0].committed, "the other three still make the round: \(reports[0].leftOut)\n"
                      + capture.lines.filter { $0.contains("secure") || $0.contains("fail") }.joined(separator: "\n"))
        XCTAssertEqual(reports[0].accepted.sorted(), ["east", "north", "south"])
        XCTAssertTrue(reports[0].leftOut["west"]?.contains("class-census-spent") ?? false, "\(reports[0].leftOut)")
    }
}
