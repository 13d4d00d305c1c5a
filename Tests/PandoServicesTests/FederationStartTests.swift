import Foundation
import PandoData
import PandoEngine
import PandoLedger
import PandoTraining
@testable import PandoServices
import PandoTestSupport
import XCTest

/// `pando versions create` (issue 15, item 4): a federation started from a plain pretrained
/// encoder folder is the one `pando-coordinator` continues, and schools accept its base version.
final class FederationStartTests: XCTestCase {
    func testCreatedFederationRunsWithTheCoordinator() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-start")
        let state = work.appendingPathComponent("state")
        let model = try TestFixtures.tinyModelFolder()
        let base = try FederationStart.create(state: state, federationID: "test-federation", baseModel: model, task: .classification,
                                              labels: Federation.labels, seed: 42)
        XCTAssertTrue(Digest.isSHA256(base))
        let ledger = try CoordinatorLedger(folder: state, readOnly: true)
        XCTAssertEqual(try ledger.head()?.id, base)
        XCTAssertEqual(try ledger.federation()?.task, "classification")
        ledger.close()

        var config = Federation.configuration(model: model, state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("start"))
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.baseVersion, base, "the coordinator continued the created federation")
        XCTAssertEqual(report.accepted.count, 3, "every school rebuilt and accepted the created base version: \(report.leftOut)")

        // An exported version carries the federation's task, labels and max length: `pando predict` uses it as the federation does.
        let export = work.appendingPathComponent("export")
        let store = try CheckpointStore(folder: state.appendingPathComponent("versions"), readOnly: true)
        try store.export(report.version, to: export)
        let exported = try FineTunedModel(folder: export)
        XCTAssertEqual(exported.record?.federation, "test-federation")
        XCTAssertEqual(exported.maxLength, config.plan.maxLength)
        XCTAssertEqual(exported.labels, Federation.labels)
        XCTAssertEqual(exported.task, .classification)
        // … and predicts exactly as the coordinator's version does (the same JSON from `pando predict`).
        let coordinatorVersion = try FineTunedModel(folder: store.folder(of: report.version))
        let texts = ["tok1 tok2 tok3", "tok40", (0..<80).map { "tok\($0 % 90)" }.joined(separator: " ")]
        XCTAssertEqual(try exported.predict(texts).map { try PredictionOutput.json($0, labels: exported.labels) },
                       try coordinatorVersion.predict(texts).map { try PredictionOutput.json($0, labels: coordinatorVersion.labels) })
        XCTAssertNotNil(try TrainingRecord.read(from: store.folder(of: base)), "the created base version has one too")

        // The same rules as coordinator.yaml, and never over an existing state.
        let other = work.appendingPathComponent("other")
        for (task, labels, fragment) in [(TaskKind.classification, ["a"], "at least two"), (.classification, ["a", "b", "a"], "'a' is listed twice"),
                                         (.regression, ["x", "y"], "no labels"), (.multiLabel, [], "list the label names")] {
            XCTAssertThrowsError(try FederationStart.create(state: other, federationID: "f", baseModel: model, task: task, labels: labels, seed: 42)) {
                XCTAssertTrue("\($0)".contains(fragment), "\($0)")
            }
        }
        XCTAssertThrowsError(try FederationStart.create(state: state, federationID: "f", baseModel: model, task: .classification, labels: ["a", "b"], seed: 42)) {
            XCTAssertTrue("\($0)".contains("already holds"), "\($0)")
        }
    }
}
