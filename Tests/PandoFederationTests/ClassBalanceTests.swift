import Foundation
import PandoData
import PandoEngine
import PandoText
import PandoTraining
@testable import PandoFederation
import XCTest

/// A school's own label skew in its local loss (issue 15, item 6): weights, oversampling,
/// restricted softmax and logit adjustment, each from the school's own counts.
final class ClassBalanceTests: XCTestCase {
    func testShapingComesFromTheSchoolsOwnCounts() {
        let classes = [0, 0, 0, 1]  // three of class 0, one of class 1, none of class 2
        XCTAssertNil(ClassBalance.none.shaping(classes: classes, classCount: 3).weights)
        XCTAssertNil(ClassBalance.none.shaping(classes: classes, classCount: 3).offsets)
        let weights = ClassBalance.weighted.shaping(classes: classes, classCount: 3).weights!
        XCTAssertEqual(weights[0], 4 / 9, accuracy: 1e-6)
        XCTAssertEqual(weights[1], 4 / 3, accuracy: 1e-6)
        XCTAssertEqual(weights[2], 0)
        XCTAssertEqual(ClassBalance.presentClasses.shaping(classes: classes, classCount: 3).offsets, [0, 0, -.infinity])
        let both = ClassBalance.weightedPresentClasses.shaping(classes: classes, classCount: 3)
        XCTAssertEqual(both.weights, weights)
        XCTAssertEqual(both.offsets, [0, 0, -.infinity])
        let prior = ClassBalance.priorAdjusted.shaping(classes: classes, classCount: 3).offsets!
        XCTAssertEqual(prior[0], logf(0.75), accuracy: 1e-6)
        XCTAssertEqual(prior[1], logf(0.25), accuracy: 1e-6)
        XCTAssertEqual(prior[2], -.infinity)
        XCTAssertEqual(ClassBalance.allCases.filter { $0.shaping(classes: classes, classCount: 3).oversample }, [.oversampled])
    }

    /// weighted-global: weights 1 / (k · p_c) from the district's prior once it is known, the
    /// school's own balance before; the census is the school's label fractions, and the prior is
    /// what secure aggregation's weighted mean of them gives, cleaned of fixed-point noise.
    func testWeightedGlobalUsesTheDistrictPrior() {
        let classes = [0, 0, 0, 1]
        XCTAssertEqual(ClassBalance.weightedGlobal.shaping(classes: classes, classCount: 3).weights,
                       ClassBalance.weighted.shaping(classes: classes, classCount: 3).weights, "no prior yet: the school's own counts")
        let prior = [0.25, 0.25, 0.5]
        let w = ClassBalance.weightedGlobal.shaping(classes: classes, classCount: 3, prior: prior).weights!
        XCTAssertEqual(w[0], 4 / 3, accuracy: 1e-6)
        XCTAssertEqual(w[2], 2 / 3, accuracy: 1e-6)
        XCTAssertEqual(ClassBalance.weights(prior: [0.5, 0.5, 1e-9]).last, 0, "noise-level prior: no weight in the billions")
        var plan = LocalTrainingPlan()
        plan.classBalance = .weightedGlobal
        XCTAssertEqual(plan.censusLength(classCount: 3), 3, "no prior yet: the schools send their fractions")
        plan.classPrior = prior
        XCTAssertEqual(plan.censusLength(classCount: 3), 0, "known: never again")
        XCTAssertEqual(ClassBalance.allCases.filter { b in
            var p = LocalTrainingPlan()
            p.classBalance = b
            return p.censusLength(classCount: 3) > 0
        }, [.weightedGlobal])
        XCTAssertEqual(ClassBalance.census(classes: classes, classCount: 3), [0.75, 0.25, 0])
        // Two schools, weights 4 and 12: the mean of their fractions is the pooled prior.
        let a = ClassBalance.census(classes: classes, classCount: 3)
        let b = ClassBalance.census(classes: [2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1], classCount: 3)
        let noise: [Float] = [-2e-7, 1e-7, 1e-7]  // fixed-point error, a little either way
        var mean = [Float](repeating: 0, count: 3)
        for c in 0..<3 { mean[c] = (4 * a[c] + 12 * b[c]) / 16 + noise[c] }
        let pooled = ClassBalance.prior(fromMeanFractions: mean)!
        for (p, expected) in zip(pooled, [3.0 / 16, 7.0 / 16, 6.0 / 16]) { XCTAssertEqual(p, expected, accuracy: 1e-6) }
        XCTAssertEqual(pooled.reduce(0, +), 1, accuracy: 1e-12)
        XCTAssertEqual(ClassBalance.prior(fromMeanFractions: [Float(-1e-7), 1.0000001])!, [0, 1])
        XCTAssertNil(ClassBalance.prior(fromMeanFractions: [Float(0.5), 0.2]), "honest fractions sum to 1")
        XCTAssertNil(ClassBalance.prior(fromMeanFractions: [Float(1.5), -0.5]), "a dishonest school pushing one class up and another down")
        XCTAssertNil(ClassBalance.prior(fromMeanFractions: [Float.nan, 1]))
        let capped = ClassBalance.weights(prior: [0.9995, 0.0005])
        XCTAssertEqual(capped[1], ClassBalance.maxPriorWeight, "a class at 0.05% weighs 100, not 1000")
        XCTAssertEqual(capped[0], 1 / (2 * 0.9995), accuracy: 1e-6)
    }

    /// The loss with offsets is cross-entropy of logits + offsets; −∞ leaves the class out,
    /// so it gets exactly zero gradient; the logit gradients match central differences.
    func testLogitOffsetsInTheLossKernel() {
        let logits: [Float] = [0.3, -1.2, 2.0, 0.7, 0.1, -0.4]  // two rows, three classes
        let targets = [2, 0]
        func loss(_ z: [Float], _ offsets: [Float]?, _ d: UnsafeMutablePointer<Float>? = nil) -> Float {
            z.withUnsafeBufferPointer { LossKernel.softmaxCrossEntropy(logits: $0.baseAddress!, rows: 2, classes: 3, targets: targets,
                                                                       weights: nil, offsets: offsets, dLogits: d) }
        }
        // −∞ on class 1: the same as cross-entropy over classes 0 and 2 alone.
        var grad = [Float](repeating: .nan, count: 6)
        let restricted = grad.withUnsafeMutableBufferPointer { loss(logits, [0, -.infinity, 0], $0.baseAddress!) }
        func ce(_ a: Float, _ b: Float, target: Float) -> Float { log(exp(a) + exp(b)) - target }
        let expected = (ce(0.3, 2.0, target: 2.0) + ce(0.7, -0.4, target: 0.7)) / 2
        XCTAssertEqual(restricted, expected, accuracy: 1e-6)
        XCTAssertEqual(grad[1], 0)
        XCTAssertEqual(grad[4], 0)
        XCTAssertEqual(grad[0] + grad[2], 0, accuracy: 1e-7, "each row's gradient sums to zero over the classes left in")
        // Finite offsets: the analytic gradient against central differences.
        let offsets: [Float] = [0.5, -2, 0.1]
        grad.withUnsafeMutableBufferPointer { _ = loss(logits, offsets, $0.baseAddress!) }
        for i in 0..<6 {
            var plus = logits, minus = logits
            plus[i] += 1e-2; minus[i] -= 1e-2
            XCTAssertEqual(grad[i], (loss(plus, offsets) - loss(minus, offsets)) / 2e-2, accuracy: 2e-4, "logit \(i)")
        }
        XCTAssertNotEqual(loss(logits, offsets), loss(logits, nil))
    }

    /// The point of restricted softmax: a school with no examples of a class leaves that class's
    /// row of the head untouched, where plain cross-entropy pushes it down on every example.
    func testAClassTheSchoolLacksGetsNoUpdateUnderPresentClasses() throws {
        let (global, data) = try schoolWithoutClassC()
        var plan = LocalTrainingPlan()
        plan.batchSize = 8
        plan.learningRate = 1e-2
        plan.weightDecay = 0
        plan.dropout = false
        let updater = try LocalUpdater(like: global)
        let layout = global.layout
        let weight = layout.tensors.first { $0.name == "classifier.weight" }!, bias = layout.tensors.first { $0.name == "classifier.bias" }!
        let hidden = global.config.hiddenSize
        func rowC(_ update: ModelUpdate) -> [Float] {
            let b = update.delta.buffer
            return (0..<hidden).map { b[weight.offset + 2 * hidden + $0] } + [b[bias.offset + 2]]
        }
        func rowA(_ update: ModelUpdate) -> [Float] { let b = update.delta.buffer; return (0..<hidden).map { b[weight.offset + $0] } }

        let plain = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        XCTAssertTrue(rowC(plain).contains { $0 != 0 }, "plain cross-entropy moves the absent class's head row")
        let plainRowA = rowA(plain)  // the delta is the updater's buffer: copy before the next round
        plan.classBalance = .presentClasses
        let restricted = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        XCTAssertEqual(rowC(restricted), [Float](repeating: 0, count: hidden + 1), "no gradient reaches class c")
        XCTAssertTrue(rowA(restricted).contains { $0 != 0 }, "the classes the school has still train")
        plan.classBalance = .priorAdjusted
        let adjusted = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        XCTAssertEqual(rowC(adjusted), [Float](repeating: 0, count: hidden + 1))
        plan.classBalance = .weighted
        let weighted = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        XCTAssertNotEqual(rowA(weighted), plainRowA, "weights change the update")
        XCTAssertEqual(weighted.exampleCount, 16, "FedAvg weights stay the real count")
    }

    func testOversamplingAddsUpdatesAndDPIsRefused() throws {
        let (global, data) = try schoolWithoutClassC()
        var plan = LocalTrainingPlan()
        plan.batchSize = 8
        plan.dropout = false
        let updater = try LocalUpdater(like: global)
        let plain = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        XCTAssertEqual(plain.metrics["steps"], 2)
        plan.classBalance = .oversampled
        let over = try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)
        XCTAssertEqual(over.metrics["steps"], 3, "12 of a and 4 of b become 12 and 12: 24 examples, 3 batches of 8")
        XCTAssertEqual(over.exampleCount, 16)
        plan.privacy = RoundPrivacy(noiseMultiplier: 1)
        XCTAssertThrowsError(try updater.train(school: "s", data: data, from: global, round: 1, baseVersion: "v0", plan: plan)) {
            XCTAssertTrue("\($0)".contains("DP-SGD"), "\($0)")
        }
    }

    /// The tiny model with a three-class head and a school of 12 "a" and 4 "b" texts, no "c".
    private func schoolWithoutClassC() throws -> (BertModel, EncodedDataset) {
        let folder = try Fixtures.tinyModelFolder()
        let labels = ["a", "b", "c"]
        let (global, _) = try BertModel.load(from: folder, head: ClassifierHead(objective: .softmaxCrossEntropy, labels: labels))
        let tokenizer = try BertTokenizer(folder: folder)
        let rows = (0..<16).map { i in (text: "tok\(i % 10) tok\(20 + i % 7)", label: i % 4 == 3 ? "b" : "a") }
        return (global, EncodedDataset(try dataset(rows, labels: labels), tokenizer: tokenizer, maxLength: 16))
    }
}
