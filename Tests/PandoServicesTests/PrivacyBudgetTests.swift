import Foundation
import NIOConcurrencyHelpers
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import PandoWire
import XCTest

/// Example-level DP in federated rounds (issue 16, item 4): the school enforces its own budget,
/// reports what it spent, the coordinator records it, and `pando audit verify` recomputes it.
final class PrivacyBudgetTests: XCTestCase {
    func run(_ name: String, budgets: [String: SchoolPrivacyBudget], rounds: Int = 3, compression: UpdateCompression = .none,
             prepare: ((String, SchoolAgent) -> Void)? = nil) async throws -> (state: URL, reports: [FederatedRoundReport], schoolLogs: URL) {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-\(name)")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: rounds)
        config.rounds.federatedEvaluation = false
        config.plan.privacy = RoundPrivacy(noiseMultiplier: 1.1, maxGradientNorm: 1, delta: 1e-5)
        config.plan.compression = compression
        let logs = state.appendingPathComponent("schools")
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: logs, logger: LogCapture().logger("dp"))
        federation.schoolPrivacy = budgets
        if let prepare { federation.prepareAgent = prepare }
        return (state, try await federation.run(), logs)
    }

    /// ε of `rounds` rounds of the test plan at a school of `examples` (2 epochs of batch 16).
    func epsilon(examples: Int, rounds: Int) throws -> Double {
        var plan = LocalTrainingPlan()
        plan.epochs = 2
        plan.batchSize = 16
        let s = LocalUpdater.privateSchedule(plan, examples: examples)
        let spend = PrivacySpend(round: 0, samplingRate: s.samplingRate, noiseMultiplier: Double(Float(1.1)), steps: s.steps, maxGradientNorm: 1)
        return try PrivacyAccounting.epsilon(Array(repeating: spend, count: rounds), delta: 1e-5)
    }

    func testSchoolsSpendTheirBudgetAndTheAuditRecomputesIt() async throws {
        // north (60 examples) can afford one round and not two.
        let one = try epsilon(examples: 60, rounds: 1), two = try epsilon(examples: 60, rounds: 2)
        let (state, reports, logs) = try await run("dp-budget", budgets: ["north": SchoolPrivacyBudget(targetEpsilon: (one + two) / 2)])
        XCTAssertEqual(reports.count, 3)
        XCTAssertTrue(reports.allSatisfy(\.committed), "south and west keep the quorum")
        XCTAssertTrue(reports[0].accepted.contains("north"))
        for r in reports.dropFirst() {
            XCTAssertFalse(r.accepted.contains("north"), "round \(r.round): north went over its budget")
            XCTAssertTrue(r.leftOut["north"]?.contains("privacy-budget-exceeded") ?? false, "round \(r.round): \(r.leftOut)")
        }

        // The coordinator's audit: a privacy record on every accepted update, ε growing per school.
        let audit = state.appendingPathComponent("audit.jsonl")
        let records = try AuditRecord.readAll(audit).records.filter { $0.event == .updateReceived }
        XCTAssertEqual(records.count, 7)
        for r in records {
            let p = try XCTUnwrap(r.privacy, "update of \(r.school ?? "?") in round \(r.round ?? -1) has no privacy record")
            XCTAssertEqual(p["noiseMultiplier"]?.doubleValue ?? 0, 1.1, accuracy: 1e-6)
            XCTAssertEqual(p["spends"]?.intValue, r.round, "\(r.school ?? "?") in round \(r.round ?? -1)")
        }
        let south = records.filter { $0.school == "south" }.compactMap { $0.privacy?["epsilonTotal"]?.doubleValue }
        XCTAssertEqual(south.count, 3)
        XCTAssertEqual(south.last ?? 0, try epsilon(examples: 90, rounds: 3), accuracy: 1e-9)
        XCTAssertEqual(south, south.sorted(), "ε only grows")

        // The privacy officer's check.
        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let report = AuditVerifier.verify(log: audit, keys: [key], privacy: PrivacyAccounting.recordedEpsilon)
        XCTAssertTrue(report.isValid, report.render())
        XCTAssertEqual(report.privacyRecordsChecked, 7)

        // north's own log: the one round it spent in, then the declines, with its reason.
        let northLog = try SchoolLog(url: logs.appendingPathComponent("north.jsonl"))
        let entries = try northLog.records()
        XCTAssertEqual(entries.filter { $0["event"]?.stringValue == "updateSent" && $0["privacy"] != nil }.count, 1)
        XCTAssertEqual(entries.filter { $0["code"]?.stringValue == "privacy-budget-exceeded" }.count, 2)
    }

    /// A school that under-reports its ε signs nothing, but the coordinator records what it
    /// claimed, and the recomputation catches it.
    func testAnUnderReportedEpsilonFailsVerification() async throws {
        let (state, reports, _) = try await run("dp-liar", budgets: [:], rounds: 2) { id, agent in
            guard id == "west" else { return }
            agent.alterMetrics = { task, metrics in
                var m = metrics
                if task == .train, let total = m["dp_epsilon_total"] { m["dp_epsilon_total"] = total / 2 }
                return m
            }
        }
        XCTAssertTrue(reports.allSatisfy(\.committed))
        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let report = AuditVerifier.verify(log: state.appendingPathComponent("audit.jsonl"), keys: [key], privacy: PrivacyAccounting.recordedEpsilon)
        XCTAssertFalse(report.isValid)
        XCTAssertTrue(report.problems.contains { $0.message.contains("west") && $0.message.contains("recomputes") }, report.render())
        XCTAssertFalse(report.problems.contains { $0.message.contains("south") || $0.message.contains("north") }, report.render())
    }

    /// DP-SGD composes with compression (post-processing of the private delta): int8 and
    /// top-k rounds commit, every update keeps its privacy record, and the audit verifies.
    func testDPSGDComposesWithCompressedUpdates() async throws {
        for compression in [UpdateCompression.int8, .topK(density: 0.05)] {
            let (state, reports, _) = try await run("dp-\(compression.name)", budgets: [:], rounds: 2, compression: compression)
            XCTAssertTrue(reports.allSatisfy(\.committed), "\(compression)")
            let audit = state.appendingPathComponent("audit.jsonl")
            let received = try AuditRecord.readAll(audit).records.filter { $0.event == .updateReceived }
            XCTAssertEqual(received.count, 6)
            XCTAssertTrue(received.allSatisfy { $0.privacy?["epsilonTotal"] != nil }, "\(compression)")
            let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
            let report = AuditVerifier.verify(log: audit, keys: [key], privacy: PrivacyAccounting.recordedEpsilon)
            XCTAssertTrue(report.isValid, report.render())
        }
    }

    /// DP-FedAvg end to end: rounds commit, and each committed round's audit record carries
    /// the school-level ε so far.
    func testDPFedAvgRecordsSchoolLevelEpsilonPerRound() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-dpfedavg")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.federatedEvaluation = false
        config.strategy.name = .dpFedAvg
        config.strategy.clip = 0.5
        config.strategy.noiseMultiplier = 1.2
        config.strategy.expectedSchools = 3
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("dpfedavg"))
        let reports = try await federation.run()
        XCTAssertTrue(reports.allSatisfy(\.committed))
        let commits = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records.filter { $0.event == .roundCommitted }
        XCTAssertEqual(commits.count, 2)
        let reference = DPFedAvg(clip: 0.5, noiseMultiplier: 1.2, expectedSchools: 3)
        for r in commits {
            let p = try XCTUnwrap(r.privacy)
            XCTAssertEqual(p["mechanism"]?.stringValue, "dp-fedavg")
            XCTAssertEqual(p["epsilon"]?.doubleValue ?? 0, try reference.epsilon(afterRounds: r.round ?? 0), accuracy: 1e-9)
        }
    }

    /// The plan's DP settings cross the wire intact; a hostile value is refused by name.
    func testRoundPrivacyCrossesTheWireAndBadValuesAreRefused() throws {
        XCTAssertNoThrow(try RoundParameters.decode(RoundParameters.encode(LocalTrainingPlan(), labels: LabelSetID(task: .classification, labels: ["a", "b"]))))
        var plan = LocalTrainingPlan()
        plan.privacy = RoundPrivacy(noiseMultiplier: 0.8, maxGradientNorm: 0.5, delta: 1e-6)
        let decoded = try RoundParameters.decode(RoundParameters.encode(plan, labels: LabelSetID(task: .classification, labels: ["a", "b"])))
        XCTAssertEqual(decoded.privacy, plan.privacy)
        var bad = RoundParameters.encode(plan, labels: LabelSetID(task: .classification, labels: ["a", "b"]))
        bad["dpNoiseMultiplier"] = -1
        XCTAssertThrowsError(try RoundParameters.decode(bad)) { XCTAssertTrue("\($0)".contains("dpNoiseMultiplier")) }
        bad["dpNoiseMultiplier"] = 1
        bad["dpDelta"] = nil
        XCTAssertThrowsError(try RoundParameters.decode(bad)) { XCTAssertTrue("\($0)".contains("dpDelta")) }
    }
}

/// PII scrubbing in every school (issue 16, item 6): on unless the school turns it off, before
/// tokenisation, with counts (never matches) in the school's log.
final class SchoolPIITests: XCTestCase {
    func testSchoolsReplacePIIBeforeTrainingAndLogOnlyCounts() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-pii")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let logs = state.appendingPathComponent("schools")
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(canary: "mail jo.smith@example.org or call 555-867-5309"),
                                                workFolder: work.appendingPathComponent("run"), schoolLogFolder: logs, logger: LogCapture().logger("pii"))
        let seen = NIOLockedValueBox<[String]>([])
        federation.prepareAgent = { _, agent in seen.withLockedValue { $0 += agent.training.examples.map(\.text) } }
        let reports = try await federation.run()
        XCTAssertTrue(reports.first?.committed ?? false)
        let texts = seen.withLockedValue { $0 }
        XCTAssertEqual(texts.count, 60 + 90 + 40)
        XCTAssertFalse(texts.contains { $0.contains("example.org") || $0.contains("867") }, "PII reached the school's training text")
        XCTAssertTrue(texts.allSatisfy { $0.contains("[EMAIL]") && $0.contains("[PHONE]") })
        for (school, n) in [("north", 60), ("south", 90), ("west", 40)] {
            let log = try SchoolLog(url: logs.appendingPathComponent("\(school).jsonl"))
            let events = try log.records().filter { $0["event"]?.stringValue == "piiScrubbed" }
            XCTAssertEqual(events.count, 1, school)
            XCTAssertEqual(events.first?["counts"]?["training_email"]?.intValue, n, school)
            XCTAssertEqual(events.first?["counts"]?["training_phone"]?.intValue, n, school)
            XCTAssertEqual(events.first?["counts"]?["validation_email"]?.intValue, 20, school)
            let raw = try String(contentsOf: logs.appendingPathComponent("\(school).jsonl"), encoding: .utf8)
            XCTAssertFalse(raw.contains("example.org") || raw.contains("5309"), "a match reached \(school)'s log")
        }
    }
}
