import PandoEngine
@testable import PandoFederation
import XCTest

final class ValidatorTests: XCTestCase {
    let layout = smallLayout()
    lazy var validator = UpdateValidator(layout: layout, round: 4, baseVersion: "abc", maxNorm: 10)

    func good() -> ParameterBuffer { buffer(layout, (0..<12).map { Float($0) * 0.1 }) }

    func rejection(_ u: ModelUpdate) -> UpdateRejection? {
        if case .failure(let r) = validator.validate(u) { return r }
        return nil
    }

    func testAcceptsAGoodUpdateAndReportsItsNorm() throws {
        let result = try validator.validate(update(good(), round: 4, base: "abc")).get()
        var squares = 0.0
        for i in 0..<12 {
            let x = Double(Float(i) * 0.1)
            squares += x * x
        }
        let expected = squares.squareRoot()
        XCTAssertEqual(result.norm, expected, accuracy: 1e-6)
        XCTAssertEqual(result.parameterCount, 12)
    }

    func testNaN() {
        let d = good(); d.view("encoder.bias")[2] = .nan
        XCTAssertEqual(rejection(update(d, round: 4, base: "abc")), .nonFinite(tensor: "encoder.bias", index: 2, kind: .nan))
    }

    func testInfinity() {
        let d = good(); d.view("head.weight")[1] = -.infinity
        XCTAssertEqual(rejection(update(d, round: 4, base: "abc")), .nonFinite(tensor: "head.weight", index: 1, kind: .infinity))
    }

    func testWrongShape() {
        let other = smallLayout([("encoder.weight", [3, 2]), ("encoder.bias", [4]), ("head.weight", [1, 2])])
        XCTAssertEqual(rejection(update(ParameterBuffer(layout: other), round: 4, base: "abc")),
                       .wrongShape(name: "encoder.weight", expected: [2, 3], received: [3, 2]))
    }

    func testWrongTensorName() {
        let other = smallLayout([("encoder.weight", [2, 3]), ("encoder.bias", [4]), ("head.kernel", [1, 2])])
        XCTAssertEqual(rejection(update(ParameterBuffer(layout: other), round: 4, base: "abc")), .unexpectedTensor(name: "head.kernel"))
        let fewer = smallLayout([("encoder.weight", [2, 3]), ("encoder.bias", [4])])
        XCTAssertEqual(rejection(update(ParameterBuffer(layout: fewer), round: 4, base: "abc")), .missingTensor(name: "head.weight"))
        let reordered = smallLayout([("encoder.bias", [4]), ("encoder.weight", [2, 3]), ("head.weight", [1, 2])])
        XCTAssertEqual(rejection(update(ParameterBuffer(layout: reordered), round: 4, base: "abc")),
                       .tensorOrder(position: 0, expected: "encoder.weight", received: "encoder.bias"))
    }

    func testHugeNorm() {
        let d = good(); d.buffer[0] = 11
        guard case .normTooLarge(let norm, 10) = rejection(update(d, round: 4, base: "abc")) else { return XCTFail("expected normTooLarge") }
        XCTAssertGreaterThan(norm, 11)
        // Finite values whose squares overflow Float are still "too large", not "non-finite".
        let e = good(); e.buffer[3] = 1e30
        guard case .normTooLarge = rejection(update(e, round: 4, base: "abc")) else { return XCTFail("expected normTooLarge") }
    }

    func testZeroExamples() {
        XCTAssertEqual(rejection(update(good(), examples: 0, round: 4, base: "abc")), .noExamples(count: 0))
        XCTAssertEqual(rejection(update(good(), examples: -3, round: 4, base: "abc")), .noExamples(count: -3))
    }

    func testStaleRoundAndBase() {
        XCTAssertEqual(rejection(update(good(), round: 3, base: "abc")), .wrongRound(expected: 4, received: 3))
        XCTAssertEqual(rejection(update(good(), round: 4, base: "old")), .wrongBase(expected: "abc", received: "old"))
    }

    func testReasonsReadWell() {
        XCTAssertEqual(UpdateRejection.nonFinite(tensor: "x", index: 3, kind: .nan).description, "tensor x has a NaN value at element 3")
        XCTAssertTrue(UpdateRejection.wrongRound(expected: 4, received: 3).description.contains("replayed"))
    }
}
