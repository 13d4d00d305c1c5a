import PandoFederation
@testable import PandoServices
import PandoWire
import XCTest

final class RoundParametersTests: XCTestCase {
    func testThePlanCrossesTheWireUnchanged() throws {
        var plan = LocalTrainingPlan()
        plan.epochs = 2
        plan.learningRate = 3e-5
        plan.batchSize = 16
        plan.maxLength = 96
        plan.warmupRatio = 0.1
        plan.linearDecay = true
        plan.weightDecay = 0
        plan.maxGradientNorm = nil
        plan.dropout = false
        plan.proximalMu = 0.05
        plan.seed = 12345
        plan.freezeLayers = 4
        plan.pooling = .mean
        plan.classBalance = .presentClasses
        let labels = LabelSetID(task: .classification, labels: ["a", "b"])
        let wire = RoundParameters.encode(plan, labels: labels)
        XCTAssertEqual(try RoundParameters.decode(wire), plan)
        XCTAssertEqual(wire[RoundParameters.labelSetDigest], labels.digest)
        XCTAssertNotEqual(labels.digest, LabelSetID(task: .classification, labels: ["b", "a"]).digest, "order matters")
        XCTAssertNotEqual(labels.digest, LabelSetID(task: .multiLabel, labels: ["a", "b"]).digest, "task matters")
    }

    func testBadAssignmentsAreNamed() {
        var wire = RoundParameters.encode(LocalTrainingPlan(), labels: LabelSetID(task: .regression, labels: ["score"]))
        wire["batchSize"] = 2.5
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("batchSize"), "\($0)") }
        wire["batchSize"] = nil
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("no batchSize"), "\($0)") }
        var balanced = LocalTrainingPlan()
        balanced.classBalance = .weighted
        wire = RoundParameters.encode(balanced, labels: LabelSetID(task: .classification, labels: ["a", "b"]))
        XCTAssertNil(RoundParameters.encode(LocalTrainingPlan(), labels: LabelSetID(task: .classification, labels: ["a", "b"]))["classBalance"],
                     "a plain plan says nothing, so older schools read it as before")
        wire["classBalance"] = 9
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("classBalance"), "\($0)") }
        wire["classBalance"] = 1
        wire["dpNoiseMultiplier"] = 1; wire["dpMaxGradientNorm"] = 1; wire["dpDelta"] = 1e-5
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("DP-SGD"), "\($0)") }
    }

    /// weighted-global's prior crosses the wire exactly; a prior that is not a distribution over
    /// the federation's labels, or comes without weighted-global, is refused by name.
    func testTheClassPriorCrossesTheWireAndBadPriorsAreNamed() throws {
        let labels = LabelSetID(task: .classification, labels: ["a", "b", "c"])
        var plan = LocalTrainingPlan()
        plan.classBalance = .weightedGlobal
        XCTAssertNil(try RoundParameters.decode(RoundParameters.encode(plan, labels: labels)).classPrior, "round 1 has none yet")
        plan.classPrior = [0.2586309523809524, 0.18273809523809523, 0.5586309523809524]
        let wire = RoundParameters.encode(plan, labels: labels)
        XCTAssertEqual(try RoundParameters.decode(wire), plan)
        func refused(_ change: (inout [WireToken: Double]) -> Void, _ fragment: String) {
            var w = wire
            change(&w)
            XCTAssertThrowsError(try RoundParameters.decode(w)) { XCTAssertTrue("\($0)".contains(fragment), "\($0)") }
        }
        refused({ $0["classPrior.1"] = 0.5 }, "not a distribution")
        refused({ $0["classPrior.0"] = -0.1; $0["classPrior.2"] = 0.9172619047619048 }, "not a distribution")
        refused({ $0["classPrior.2"] = nil }, "no classPrior.2")
        refused({ $0["classPrior.3"] = 0 }, "more values")
        refused({ $0["classBalance"] = Double(ClassBalance.allCases.firstIndex(of: .weighted)!) }, "without class balance weighted-global")
    }
}

final class CompressionSettingsTests: XCTestCase {
    func testCompressionCrossesTheWireAndBadValuesAreNamed() throws {
        let labels = LabelSetID(task: .classification, labels: ["a", "b"])
        for c in [UpdateCompression.none, .float16, .int8, .topK(density: 0.015)] {
            var plan = LocalTrainingPlan()
            plan.compression = c
            XCTAssertEqual(try RoundParameters.decode(RoundParameters.encode(plan, labels: labels)).compression, c)
        }
        var wire = RoundParameters.encode(LocalTrainingPlan(), labels: labels)
        wire["compression"] = nil
        XCTAssertEqual(try RoundParameters.decode(wire).compression, UpdateCompression.none, "an older coordinator's plain Float32")
        wire["compression"] = 7
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("compression"), "\($0)") }
        wire["compression"] = 3
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("no topkDensity"), "\($0)") }
        wire["topkDensity"] = 1.5
        XCTAssertThrowsError(try RoundParameters.decode(wire)) { XCTAssertTrue("\($0)".contains("topkDensity"), "\($0)") }
    }
}
