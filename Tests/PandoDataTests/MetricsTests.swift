import Foundation
import XCTest
@testable import PandoData

/// Expected values below were computed with scikit-learn 1.9.1 (and scipy for
/// Pearson/Spearman) on the same inputs; the function used is named at each value.
final class MetricsTests: XCTestCase {
    // Classes 0–2 occur in the truth, 3 only among predictions, 4 nowhere.
    let yTrue = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 1, 0]
    let yPred = [0, 1, 0, 3, 1, 1, 0, 2, 1, 2, 1, 0]
    let names = ["a", "b", "c", "d", "e"]

    func testClassificationMatchesSklearn() throws {
        let m = try ClassificationMetrics(truth: yTrue, predicted: yPred, labels: names, ordinal: true)
        XCTAssertEqual(m.accuracy, 0.6666666666666666, accuracy: 1e-12)  // accuracy_score
        // f1_score / precision_score / recall_score(average="macro", zero_division=0)
        XCTAssertEqual(m.macroF1, 0.5333333333333333, accuracy: 1e-12)
        XCTAssertEqual(m.macroPrecision, 0.5875, accuracy: 1e-12)
        XCTAssertEqual(m.macroRecall, 0.5041666666666667, accuracy: 1e-12)
        XCTAssertEqual(m.weightedF1, 0.7000000000000001, accuracy: 1e-12)  // f1_score(average="weighted")
        // precision_recall_fscore_support(labels=[0,1,2,3,4], zero_division=0)
        let p = [0.75, 0.6, 1.0, 0.0, 0.0], r = [0.6, 0.75, 0.6666666666666666, 0, 0]
        let f = [0.6666666666666666, 0.6666666666666666, 0.8, 0, 0]
        for c in 0..<5 {
            XCTAssertEqual(m.perClass[c].precision, p[c], accuracy: 1e-12)
            XCTAssertEqual(m.perClass[c].recall, r[c], accuracy: 1e-12)
            XCTAssertEqual(m.perClass[c].f1, f[c], accuracy: 1e-12)
        }
        XCTAssertEqual(m.perClass.map(\.support), [5, 4, 3, 0, 0])
        // confusion_matrix(labels=[0,1,2,3,4])
        XCTAssertEqual(m.confusion, [[3, 1, 0, 1, 0], [1, 3, 0, 0, 0], [0, 1, 2, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
        XCTAssertEqual(m.meanAbsoluteLevelError!, 0.5, accuracy: 1e-12)  // mean_absolute_error
        XCTAssertTrue(m.table.contains("accuracy 0.6667"), m.table)
        let decoded = try JSONDecoder().decode(ClassificationMetrics.self, from: JSONEncoder().encode(m))
        XCTAssertEqual(decoded, m)
    }

    func testPerfectAndMismatchedInputs() throws {
        let m = try ClassificationMetrics(truth: [0, 1], predicted: [0, 1], labels: ["x", "y"])
        XCTAssertEqual(m.macroF1, 1)
        XCTAssertNil(m.meanAbsoluteLevelError)
        XCTAssertThrowsError(try ClassificationMetrics(truth: [0], predicted: [0, 1], labels: ["x", "y"]))
        XCTAssertThrowsError(try ClassificationMetrics(truth: [2], predicted: [0], labels: ["x", "y"]))
    }

    func testMultiLabelMatchesSklearn() throws {
        let truth = [[0, 1], [1], [0, 2], [], [2], [0, 1, 2]]
        let pred = [[0], [1], [0, 2], [1], [], [0, 1]]
        let m = try MultiLabelMetrics(truth: truth, predicted: pred, labels: ["a", "b", "c", "d"])
        XCTAssertEqual(m.microF1, 0.75, accuracy: 1e-12)  // f1_score(average="micro")
        XCTAssertEqual(m.microPrecision, 0.8571428571428571, accuracy: 1e-12)  // precision_score(average="micro")
        XCTAssertEqual(m.microRecall, 0.6666666666666666, accuracy: 1e-12)  // recall_score(average="micro")
        XCTAssertEqual(m.macroF1, 0.5416666666666666, accuracy: 1e-12)  // f1_score(average="macro", zero_division=0)
        XCTAssertEqual(m.subsetAccuracy, 0.3333333333333333, accuracy: 1e-12)  // accuracy_score
        XCTAssertEqual(m.hammingLoss, 0.16666666666666666, accuracy: 1e-12)  // hamming_loss
        // precision_recall_fscore_support(zero_division=0)
        XCTAssertEqual(m.perLabel.map(\.precision), [1, 0.6666666666666666, 1, 0])
        XCTAssertEqual(m.perLabel.map(\.recall), [1, 0.6666666666666666, 0.3333333333333333, 0])
        XCTAssertEqual(m.perLabel.map(\.f1), [1, 0.6666666666666666, 0.5, 0])
        XCTAssertEqual(m.perLabel.map(\.support), [3, 3, 3, 0])
        XCTAssertTrue(m.table.contains("micro-F1 0.7500"), m.table)
    }

    func testThresholds() {
        let probs: [[Float]] = [[0.9, 0.2, 0.5], [0.1, 0.6, 0.3]]
        XCTAssertEqual(MultiLabelMetrics.applyThreshold(probs), [[0, 2], [1]])
        XCTAssertEqual(MultiLabelMetrics.applyThresholds(probs, thresholds: [0.95, 0.1, 0.4]), [[1, 2], [1]])
    }

    func testRegressionMatchesSklearnAndScipy() throws {
        let t: [Float] = [1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 2.0, 4.0]
        let p: [Float] = [1.2, 2.6, 2.7, 4.4, 4.1, 3.3, 1.4, 5.2]
        let m = try RegressionMetrics(truth: t, predicted: p, scoreRange: 1...5)
        XCTAssertEqual(m.rmse, 0.6471089230390488, accuracy: 1e-7)  // sqrt(mean_squared_error)
        XCTAssertEqual(m.mae, 0.5624999850988388, accuracy: 1e-7)  // mean_absolute_error
        XCTAssertEqual(m.pearson!, 0.8780017642289021, accuracy: 1e-7)  // scipy.stats.pearsonr
        XCTAssertEqual(m.spearman!, 0.9092412093166349, accuracy: 1e-9)  // scipy.stats.spearmanr
        // cohen_kappa_score(round(t), round(p), weights="quadratic", labels=[1..5])
        XCTAssertEqual(m.qwk!, 0.8461538461538461, accuracy: 1e-12)
        XCTAssertTrue(m.table.contains("QWK[1…5] 0.8462"), m.table)
        XCTAssertNil(try RegressionMetrics(truth: t, predicted: p).qwk)
        XCTAssertNil(try RegressionMetrics(truth: [1, 2], predicted: [3, 3]).pearson)
    }

    func testQuadraticWeightedKappaKnownValue() {
        // cohen_kappa_score([1,2,3,4,5,3,3,2,1,4], [1,3,3,5,4,2,3,2,2,4], weights="quadratic")
        let a = [1, 2, 3, 4, 5, 3, 3, 2, 1, 4], b = [1, 3, 3, 5, 4, 2, 3, 2, 2, 4]
        XCTAssertEqual(quadraticWeightedKappa(a, b, range: 1...5)!, 0.8251748251748252, accuracy: 1e-12)
        // Unused levels around the range do not change the value.
        XCTAssertEqual(quadraticWeightedKappa(a, b, range: 0...6)!, 0.8251748251748252, accuracy: 1e-12)
        XCTAssertEqual(quadraticWeightedKappa(a, a, range: 1...5)!, 1, accuracy: 1e-12)
    }

    func testQWKRoundingAndClipping() {
        XCTAssertEqual(RegressionMetrics.level(2.5, in: 0...4), 3)
        XCTAssertEqual(RegressionMetrics.level(2.49, in: 0...4), 2)
        XCTAssertEqual(RegressionMetrics.level(-0.7, in: 0...4), 0)
        XCTAssertEqual(RegressionMetrics.level(9, in: 0...4), 4)
    }
}
