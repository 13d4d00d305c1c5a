import Foundation
import Logging
import PandoData
import PandoEngine
import PandoFederation
@testable import PandoServices
import PandoTestSupport
import XCTest

enum Federation {
    static let labels = ["a", "b"]

    /// A tiny-model federation configuration with short deadlines (TLS fields are filled by `LoopbackFederation`).
    static func configuration(model: URL, state: URL, rounds: Int = 2, strategy: StrategyChoice = StrategyChoice()) -> CoordinatorConfiguration {
        var c = CoordinatorConfiguration(federationID: "test-federation", task: .classification, labels: labels, baseModel: model,
                                         stateFolder: state, certificate: state, privateKey: state, caCertificate: state,
                                         revocationList: state)
        c.rounds.rounds = rounds
        c.rounds.minSchools = 3
        c.rounds.quorum = 2
        c.rounds.roundDeadline = .seconds(120)
        c.rounds.waitForSchools = .seconds(60)
        c.rounds.evaluationDeadline = .seconds(60)
        c.plan.epochs = 2
        c.plan.learningRate = 1e-3
        c.plan.batchSize = 16
        c.plan.maxLength = 24
        c.plan.dropout = false
        c.strategy = strategy
        return c
    }

    static func dataset(_ rows: [(text: String, label: String)]) throws -> LabeledDataset {
        let map = try LabelMap(names: labels)
        return LabeledDataset(task: .classification, labels: map,
                              examples: rows.enumerated().map { Example(text: $1.text, target: .classIndex(map.index(of: $1.label)!), line: $0 + 2) })
    }

    /// Three schools of different sizes on the synthetic separable task.
    static func schools(canary: String = "") throws -> [LoopbackFederation.School] {
        try [("north", 60), ("south", 90), ("west", 40)].enumerated().map { i, s in
            let rows = synthetic(count: s.1, seed: UInt64(100 + i), canary: canary)
            let validation = synthetic(count: 20, seed: UInt64(200 + i), canary: canary)
            return LoopbackFederation.School(id: s.0, training: try dataset(rows), validation: try dataset(validation))
        }
    }
}
