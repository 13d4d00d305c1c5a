import Foundation
import PandoData
import PandoEngine
import PandoTestSupport
@testable import PandoFederation
import PandoText
import PandoTraining
import XCTest

final class SimulationTests: XCTestCase {
    func simulation(strategy: (ParameterLayout) -> any Strategy) throws -> (LocalFederation, EvaluationMetrics) {
        let folder = try Fixtures.tinyModelFolder()
        let (model, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]), seed: 7)
        let tokenizer = try BertTokenizer(folder: folder)
        let train = try dataset(synthetic(count: 120, seed: 1))
        let test = try dataset(synthetic(count: 60, seed: 2))
        let schools = (0..<3).map { s in
            SimulatedSchool(id: "school-\(s)", data: train.subset(Array(stride(from: s, to: 120, by: 3)).filter { $0 % 5 != s || s == 0 }))
        }
        var settings = SimulationSettings()
        settings.rounds = 2
        settings.plan.epochs = 2
        settings.plan.learningRate = 2e-3
        settings.plan.batchSize = 16
        settings.plan.maxLength = 24
        settings.plan.dropout = false
        let federation = try LocalFederation(global: model, tokenizer: tokenizer, schools: schools, test: test,
                                             strategy: strategy(model.layout), settings: settings)
        return (federation, try federation.evaluate())
    }

    func testFedAvgRoundsImproveTheGlobalModelAndRecordEverything() throws {
        let (federation, initial) = try simulation { _ in FedAvg() }
        var seen = 0
        let records = try federation.run { _ in seen += 1 }
        XCTAssertEqual(seen, 2)
        XCTAssertEqual(records.map(\.round), [1, 2])
        XCTAssertEqual(records.map(\.version), ["v1", "v2"])
        XCTAssertEqual(records.map(\.baseVersion), ["v0", "v1"])
        let sizes = federation.schools.map(\.data.count)
        for r in records {
            XCTAssertTrue(r.committed)
            XCTAssertEqual(r.schools, ["school-0", "school-1", "school-2"])
            XCTAssertTrue(r.rejected.isEmpty, "\(r.rejected)")
            XCTAssertEqual(r.examples, sizes.reduce(0, +))
            XCTAssertEqual(r.updateNorms.count, 3)
            XCTAssertTrue(r.updateNorms.values.allSatisfy { $0 > 0 && $0.isFinite })
            XCTAssertTrue(r.trainLoss.isFinite)
            XCTAssertEqual(r.bytesPerUpdate, 4 * federation.global.parameterCount)
            XCTAssertEqual(r.bytesUp, 3 * r.bytesPerUpdate)
            XCTAssertEqual(r.bytesDown, 3 * r.bytesPerUpdate)
            for key in ["accuracy", "macro_f1", "loss"] { XCTAssertNotNil(r.test[key], key) }
            XCTAssertGreaterThan(r.trainSeconds, 0)
            XCTAssertGreaterThanOrEqual(r.seconds, r.trainSeconds)
        }
        XCTAssertLessThan(records[1].test["loss"]!, initial.loss)
        XCTAssertLessThan(records[1].trainLoss, records[0].trainLoss)
        XCTAssertGreaterThan(records[1].test["accuracy"]!, initial.summary["accuracy"]!)
        XCTAssertGreaterThanOrEqual(records[1].test["accuracy"]!, 0.8)
        let csv = LocalFederation.csv(records, initial: initial.summary)
        let lines = csv.split(separator: "\n")
        XCTAssertEqual(lines.count, 4)
        XCTAssertTrue(lines[0].contains("test_accuracy"))
    }

    func testFedProxAndFedAdamRunThroughTheSamePath() throws {
        for make in [{ (_: ParameterLayout) -> any Strategy in FedProx(mu: 0.01) },
                     { (l: ParameterLayout) -> any Strategy in FedAdam(layout: l, settings: .init(learningRate: 1e-3, tau: 1e-4)) }] {
            let (federation, initial) = try simulation(strategy: make)
            let records = try federation.run()
            XCTAssertTrue(records.allSatisfy(\.committed))
            XCTAssertLessThan(records[1].test["loss"]!, initial.loss, federation.strategy.name)
        }
    }
}
