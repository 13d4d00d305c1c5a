import Foundation
import PandoEngine
import PandoTestSupport
@testable import PandoFederation
import XCTest

/// Federated plans freeze each family's own embedding tables (DistilBERT and RoBERTa name
/// them differently from BERT), so no family's update can reveal which tokens a school used.
final class FamilySelectionTests: XCTestCase {
    func testPlansFreezeEachFamilysEmbeddingTables() throws {
        let expected: [String: Set<String>] = [
            "tiny/softmax": ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                             "bert.embeddings.token_type_embeddings.weight"],
            "families/distilbert_softmax": ["distilbert.embeddings.word_embeddings.weight", "distilbert.embeddings.position_embeddings.weight"],
            "families/roberta_softmax": ["roberta.embeddings.word_embeddings.weight", "roberta.embeddings.position_embeddings.weight",
                                         "roberta.embeddings.token_type_embeddings.weight"],
        ]
        for (path, tables) in expected {
            let config = try BertConfig(contentsOf: TestFixtures.url(path).appendingPathComponent("config.json"))
            let layout = BertModel.layout(config: config, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: ["a", "b"]))
            let selection = TensorSelection(layout: layout, plan: LocalTrainingPlan())
            XCTAssertEqual(selection.frozen, tables, path)
            XCTAssertEqual(selection.trainedCount, layout.count - tables.reduce(0) { $0 + layout[$1]!.count }, path)
            var unfrozen = LocalTrainingPlan()
            unfrozen.freezeEmbeddings = false
            XCTAssertEqual(TensorSelection(layout: layout, plan: unfrozen).frozen, [], path)
        }
    }
}
