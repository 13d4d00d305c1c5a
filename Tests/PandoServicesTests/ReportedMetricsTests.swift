import Foundation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoWire
import XCTest

/// Metrics schools report are range-checked (issue 17): an impossible value refuses the result, with the reason recorded.
extension EndToEndTests {
    /// North claims a negative training loss and west an accuracy of 1.5 when it evaluates:
    /// north's update is left out (audited), west's evaluation is left out of the combined
    /// metrics (audited as evaluationRejected), and the round commits with the honest schools.
    func testImpossibleMetricsRefuseTheResult() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-e2e-metrics")
        let state = work.appendingPathComponent("state")
        let config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("e2e"))
        federation.prepareAgent = { id, agent in
            switch id {
            case "north": agent.alterMetrics = { task, m in task == .train ? m.merging(["train_loss": -3]) { $1 } : m }
            case "west": agent.alterMetrics = { task, m in task == .evaluate ? m.merging(["accuracy": 1.5]) { $1 } : m }
            default: break
            }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed)
        XCTAssertEqual(report.accepted.sorted(), ["south", "west"])
        XCTAssertTrue(report.leftOut["north"]?.contains("train_loss -3.0 is negative") ?? false, "\(report.leftOut)")
        XCTAssertEqual(report.evaluatedSchools, ["north", "south"])
        XCTAssertTrue(report.evaluationRefused["west"]?.contains("accuracy 1.5 is outside [0, 1]") ?? false, "\(report.evaluationRefused)")
        XCTAssertLessThanOrEqual(report.evaluation["accuracy"] ?? 2, 1)
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let north = records.filter { $0.event == AuditEvent.updateRejected && $0.school == "north" }
        XCTAssertTrue(north.first?.reason?.contains("train_loss") ?? false, "\(north.map(\.reason))")
        let west = records.filter { $0.event == AuditEvent.evaluationRejected && $0.school == "west" }
        XCTAssertEqual(west.first?.round, 1)
        XCTAssertTrue(west.first?.reason?.contains("accuracy 1.5") ?? false, "\(west.map(\.reason))")
    }

    func testMetricRanges() {
        XCTAssertNil(ResultMetrics.problem(in: ["accuracy": 1, "macro_f1": 0, "qwk": -1, "loss": 0, "rmse": 2.5, "anything": -7]))
        XCTAssertEqual(ResultMetrics.problem(in: ["macro_f1": -0.1]), "macro_f1 -0.1 is outside [0, 1]")
        XCTAssertEqual(ResultMetrics.problem(in: ["pearson": 1.01]), "pearson 1.01 is outside [-1, 1]")
        XCTAssertEqual(ResultMetrics.problem(in: ["rmse": -1]), "rmse -1.0 is negative")
        XCTAssertEqual(ResultMetrics.problem(in: ["loss": .infinity]), "loss is inf")
        XCTAssertEqual(ResultMetrics.problem(in: ["other": .nan]), "other is nan")
        // A school's privacy report: a sampling rate is a fraction, counts are whole (a huge or
        // fractional count must be refused here, not turned into an integer later).
        XCTAssertNil(ResultMetrics.problem(in: ["dp_sampling_rate": 0.05, "dp_steps": 17, "dp_spends": 2, "dp_epsilon_total": 3.2]))
        XCTAssertEqual(ResultMetrics.problem(in: ["dp_sampling_rate": 1.5]), "dp_sampling_rate 1.5 is outside [0, 1]")
        XCTAssertEqual(ResultMetrics.problem(in: ["dp_steps": 1e300]), "dp_steps 1e+300 is not a whole number below 2^53")
        XCTAssertEqual(ResultMetrics.problem(in: ["dp_spends": 2.5]), "dp_spends 2.5 is not a whole number below 2^53")
        XCTAssertEqual(ResultMetrics.problem(in: ["dp_epsilon": -1]), "dp_epsilon -1.0 is negative")
    }
}
