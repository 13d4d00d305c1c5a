import Foundation
import Logging
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import XCTest

/// A federation over the tiny random RoBERTa (byte-level BPE tokenizer): rounds commit, each
/// update leaves RoBERTa's own embedding tables untouched, and the audit names those tables.
final class FamilyFederationTests: XCTestCase {
    func testRoBERTaFederationFreezesItsEmbeddingTablesAndAuditsThem() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-roberta-federation")
        let state = work.appendingPathComponent("state")
        let model = work.appendingPathComponent("roberta")
        try FileManager.default.copyItem(at: TestFixtures.url("families/roberta_encoder"), to: model)
        var config = Federation.configuration(model: model, state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("roberta"))
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertGreaterThanOrEqual(report.accepted.count, 2)

        let head = ClassifierHead(objective: .softmaxCrossEntropy, labels: Federation.labels)
        let (base, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.baseVersion)"), head: head)
        let (new, _) = try BertModel.load(from: state.appendingPathComponent("versions/\(report.version)"), head: head)
        XCTAssertEqual(new.config.family, .roberta)
        let tables = Set(ModelFamily.roberta.embeddingTables)
        for name in tables {
            XCTAssertEqual(new.parameters.values(name), base.parameters.values(name), "\(name) changed")
        }
        XCTAssertNotEqual(new.parameters.values("classifier.out_proj.weight"), base.parameters.values("classifier.out_proj.weight"))
        XCTAssertNotEqual(new.parameters.values("roberta.encoder.layer.1.output.dense.weight"),
                          base.parameters.values("roberta.encoder.layer.1.output.dense.weight"))
        for file in ["vocab.json", "merges.txt"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: state.appendingPathComponent("versions/\(report.version)/\(file)").path), file)
        }
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        let started = try XCTUnwrap(records.first { $0.event == .roundStarted })
        XCTAssertEqual(started.strategyParameters?["frozenTensors"]?.stringValue, tables.sorted().joined(separator: ","))
    }
}
