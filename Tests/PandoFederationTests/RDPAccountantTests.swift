import Foundation
import PandoTestSupport
@testable import PandoFederation
@testable import PandoTraining
import XCTest

/// RDPAccountant against Google's dp-accounting 0.6.0 (Tests/Fixtures/privacy/dp_accounting_rdp.json,
/// made by make_accountant_fixture.py), plus properties any RDP accountant must have.
///
/// Agreement criterion: relative error |ours − theirs| / |theirs| < 5e-4 (3 significant figures);
/// exact equality where dp-accounting gives 0 or ∞. In practice the error is around 1e-12.
final class RDPAccountantTests: XCTestCase {
    private static let tolerance = 5e-4

    // MARK: - Fixture

    private struct Fixture: Decodable {
        struct Grid: Decodable {
            let q: [Double], sigma: [Double], steps: [Int], delta: [Double]
            let epsilon: [[[[Double?]]]], order: [[[[Double]]]]  // [q][sigma][steps][delta]
        }
        struct DeltaGrid: Decodable {
            let q: [Double], sigma: [Double], steps: [Int], epsilon: [Double]
            let delta: [[[[Double]]]]  // [q][sigma][steps][epsilon]
        }
        struct RDPCase: Decodable { let q: Double, sigma: Double, rdp: [Double?] }
        struct Calibration: Decodable { let epsilon: Double, delta: Double, q: Double, steps: Int, sigma: Double, reached: Double }
        let versions: [String: String]
        let orders: [Double]
        let grid: Grid
        let delta: DeltaGrid
        let rdp: [RDPCase]
        let calibration: [Calibration]
    }

    private func fixture() throws -> Fixture {
        let data = try Data(contentsOf: TestFixtures.url("privacy/dp_accounting_rdp.json"))
        let fixture = try JSONDecoder().decode(Fixture.self, from: data)
        XCTAssertEqual(fixture.versions["dp_accounting"], "0.6.0")
        return fixture
    }

    /// Relative error, 0 when equal (including both 0 or both ∞), ∞ when only one is 0 or ∞.
    private func relativeError(_ got: Double, _ want: Double) -> Double {
        if got == want { return 0 }
        if want == 0 || !want.isFinite || !got.isFinite { return .infinity }
        return abs(got - want) / abs(want)
    }

    private func accountant(q: Double, sigma: Double, steps: Int) throws -> RDPAccountant {
        var accountant = RDPAccountant()
        try accountant.compose(samplingRate: q, noiseMultiplier: sigma, steps: steps)
        return accountant
    }

    // MARK: - Agreement with dp-accounting

    func testDefaultOrdersAreDPAccountingsDefaults() throws {
        XCTAssertEqual(RDPAccountant.defaultOrders, try fixture().orders)
        XCTAssertEqual(RDPAccountant().orders, RDPAccountant.defaultOrders)
    }

    func testEpsilonMatchesDPAccountingOnTheWholeGrid() throws {
        let grid = try fixture().grid
        var worst = 0.0, points = 0
        for (a, q) in grid.q.enumerated() {
            for (b, sigma) in grid.sigma.enumerated() {
                for (c, steps) in grid.steps.enumerated() {
                    let accountant = try accountant(q: q, sigma: sigma, steps: steps)
                    for (d, delta) in grid.delta.enumerated() {
                        let want = grid.epsilon[a][b][c][d] ?? .infinity
                        let (epsilon, order) = accountant.epsilon(delta: delta)
                        let error = relativeError(epsilon, want)
                        worst = max(worst, error)
                        points += 1
                        let point = "q \(q) sigma \(sigma) steps \(steps) delta \(delta)"
                        XCTAssertLessThan(error, Self.tolerance, "\(point): epsilon \(epsilon), dp-accounting \(want)")
                        // The best and second-best orders differ by > 6e-6 relative on this grid,
                        // far above the numerical noise, so the optimal order must agree too.
                        XCTAssertEqual(order, grid.order[a][b][c][d], "\(point): optimal order")
                    }
                }
            }
        }
        XCTAssertEqual(points, 160)
        print("RDPAccountant epsilon: \(points) grid points, max relative error \(worst)")
    }

    func testDeltaMatchesDPAccounting() throws {
        let grid = try fixture().delta
        var worst = 0.0, points = 0
        for (a, q) in grid.q.enumerated() {
            for (b, sigma) in grid.sigma.enumerated() {
                for (c, steps) in grid.steps.enumerated() {
                    let accountant = try accountant(q: q, sigma: sigma, steps: steps)
                    for (d, epsilon) in grid.epsilon.enumerated() {
                        let want = grid.delta[a][b][c][d], got = accountant.delta(epsilon: epsilon)
                        let error = relativeError(got, want)
                        worst = max(worst, error)
                        points += 1
                        XCTAssertLessThan(error, Self.tolerance,
                                          "q \(q) sigma \(sigma) steps \(steps) epsilon \(epsilon): delta \(got), dp-accounting \(want)")
                    }
                }
            }
        }
        print("RDPAccountant delta: \(points) grid points, max relative error \(worst)")
    }

    /// Per-order RDP, including the low fractional orders dp-accounting drops (∞) because their
    /// series has not converged within 1000 terms.
    func testPerOrderRDPMatchesDPAccountingIncludingDroppedOrders() throws {
        for reference in try fixture().rdp {
            let ours = try accountant(q: reference.q, sigma: reference.sigma, steps: 1).rdp
            XCTAssertEqual(ours.count, reference.rdp.count)
            var worst = 0.0
            for (k, (got, want)) in zip(ours, reference.rdp).enumerated() {
                let error = relativeError(got, want ?? .infinity)
                worst = max(worst, error)
                XCTAssertLessThan(error, Self.tolerance, "q \(reference.q) sigma \(reference.sigma) order \(RDPAccountant.defaultOrders[k])")
            }
            XCTAssertTrue(ours.contains(.infinity), "this case exercises dropped orders")
            print("RDPAccountant rdp q \(reference.q) sigma \(reference.sigma): max relative error \(worst)")
        }
    }

    func testCalibratedNoiseMatchesDPAccounting() throws {
        let cases = try fixture().calibration
        XCTAssertEqual(cases.count, 18)
        var worst = 0.0
        for c in cases {
            let sigma = try RDPAccountant.calibrateNoiseMultiplier(
                targetEpsilon: c.epsilon, delta: c.delta, samplingRate: c.q, steps: c.steps)
            let error = relativeError(sigma, c.sigma)
            worst = max(worst, error)
            let point = "epsilon \(c.epsilon) delta \(c.delta) q \(c.q) steps \(c.steps)"
            XCTAssertLessThan(error, Self.tolerance, "\(point): sigma \(sigma), dp-accounting \(c.sigma)")
            // Within budget, and minimal: a slightly smaller sigma overshoots it.
            XCTAssertLessThanOrEqual(try accountant(q: c.q, sigma: sigma, steps: c.steps).epsilon(delta: c.delta).epsilon, c.epsilon, point)
            XCTAssertGreaterThan(try accountant(q: c.q, sigma: sigma * (1 - 1e-4), steps: c.steps).epsilon(delta: c.delta).epsilon, c.epsilon, point)
        }
        print("RDPAccountant calibration: \(cases.count) targets, max relative error \(worst)")
    }

    // MARK: - Properties

    func testEpsilonGrowsWithSteps() throws {
        for q in [1e-3, 0.01, 0.1, 0.5] {
            for sigma in [0.7, 1.3, 3.0] {
                var previous = 0.0
                for steps in [1, 2, 5, 10, 50, 100, 1000, 10000] {
                    let epsilon = try accountant(q: q, sigma: sigma, steps: steps).epsilon(delta: 1e-5).epsilon
                    XCTAssertGreaterThan(epsilon, previous, "q \(q) sigma \(sigma) steps \(steps)")
                    previous = epsilon
                }
            }
        }
    }

    /// Holds wherever all orders converge; see the next test for where dp-accounting's cap breaks it.
    func testEpsilonFallsWithNoise() throws {
        for q in [1e-3, 0.01, 0.1] {
            var previous = Double.infinity
            for sigma in stride(from: 0.5, through: 6.0, by: 0.25) {
                let epsilon = try accountant(q: q, sigma: sigma, steps: 1000).epsilon(delta: 1e-5).epsilon
                XCTAssertLessThan(epsilon, previous, "q \(q) sigma \(sigma)")
                previous = epsilon
            }
        }
    }

    /// Faithful to dp-accounting: a fractional order whose series needs more than 1000 terms is
    /// dropped, so at q = 0.5 a little more noise can drop order 1.7 and *raise* epsilon
    /// (dp-accounting: 1003.60 at order 1.7 for sigma 0.63, 1065.12 at order 1.8 for sigma 0.64).
    func testDroppedFractionalOrderCanRaiseEpsilonLikeDPAccounting() throws {
        let lower = try accountant(q: 0.5, sigma: 0.63, steps: 1000), higher = try accountant(q: 0.5, sigma: 0.64, steps: 1000)
        let index = RDPAccountant.defaultOrders.firstIndex(of: 1.7)!
        XCTAssertTrue(lower.rdp[index].isFinite)
        XCTAssertEqual(higher.rdp[index], .infinity)
        let (e1, o1) = lower.epsilon(delta: 1e-5), (e2, o2) = higher.epsilon(delta: 1e-5)
        XCTAssertEqual(o1, 1.7)
        XCTAssertEqual(o2, 1.8)
        XCTAssertEqual(e1, 1003.5998961169676, accuracy: 1e-6)
        XCTAssertEqual(e2, 1065.123955397106, accuracy: 1e-6)
    }

    /// q = 1 is the plain Gaussian mechanism: RDP α / (2σ²) per step; and the general series
    /// approaches it as q → 1.
    func testFullSamplingIsThePlainGaussian() throws {
        for sigma in [0.5, 1.0, 3.0] {
            let full = try accountant(q: 1, sigma: sigma, steps: 7)
            for (alpha, r) in zip(full.orders, full.rdp) {
                XCTAssertEqual(r, 7 * alpha / (2 * sigma * sigma), accuracy: 1e-12 * r)
            }
            let nearlyFull = try RDPAccountant.rdp(samplingRate: 1 - 1e-9, noiseMultiplier: sigma, orders: [2, 3, 10, 63, 1024])
            for (alpha, r) in zip([2.0, 3, 10, 63, 1024], nearlyFull) {
                XCTAssertEqual(r, alpha / (2 * sigma * sigma), accuracy: 1e-6 * r, "sigma \(sigma) order \(alpha)")
            }
        }
        // And its (ε, δ) is the closed-form conversion at the best order.
        let sigma = 2.0, delta = 1e-6
        let closedForm = RDPAccountant.defaultOrders.map { a in
            a / (2 * sigma * sigma) + log1p(-1 / a) - log(delta * a) / (a - 1)
        }.min()!
        XCTAssertEqual(try accountant(q: 1, sigma: sigma, steps: 1).epsilon(delta: delta).epsilon, closedForm, accuracy: 1e-12)
    }

    /// Order 2 has a closed form, A₂ = 1 + q²(e^{1/σ²} − 1): checks the log-space series where
    /// naive summation would cancel (small q, large σ).
    func testOrderTwoMatchesItsClosedForm() throws {
        for (q, sigma) in [(1e-3, 10.0), (1e-2, 5.0), (0.3, 0.7), (0.9, 0.5)] {
            let r = try RDPAccountant.rdp(samplingRate: q, noiseMultiplier: sigma, orders: [2])[0]
            let exact = log1p(q * q * expm1(1 / (sigma * sigma)))
            XCTAssertEqual(r, exact, accuracy: 1e-9 * exact, "q \(q) sigma \(sigma)")
        }
    }

    func testExtremeParametersStayFiniteAndOrdered() throws {
        let orders: [Double] = [1.5, 2, 2.5, 10.5, 32, 100.5, 256, 1024, 4096]
        for (q, sigma) in [(1e-6, 1000.0), (1e-6, 0.3), (1e-3, 50.0), (0.999, 200.0), (0.5, 0.2)] {
            let r = try RDPAccountant.rdp(samplingRate: q, noiseMultiplier: sigma, orders: orders)
            for (alpha, value) in zip(orders, r) {
                XCTAssertFalse(value.isNaN, "q \(q) sigma \(sigma) order \(alpha)")
                XCTAssertGreaterThanOrEqual(value, 0, "q \(q) sigma \(sigma) order \(alpha)")
            }
            // Rényi divergence grows with the order (integer orders: exact series).
            let integers = zip(orders, r).filter { $0.0.rounded() == $0.0 }.map(\.1)
            for k in 1..<integers.count { XCTAssertGreaterThanOrEqual(integers[k], integers[k - 1], "q \(q) sigma \(sigma)") }
        }
    }

    func testCompositionIsAdditive() throws {
        let a = try accountant(q: 0.01, sigma: 1.1, steps: 600), b = try accountant(q: 0.2, sigma: 3, steps: 40)
        var both = RDPAccountant()
        try both.compose(samplingRate: 0.2, noiseMultiplier: 3, steps: 40)
        try both.compose(samplingRate: 0.01, noiseMultiplier: 1.1, steps: 600)
        var split = RDPAccountant()
        for _ in 0..<3 { try split.compose(samplingRate: 0.01, noiseMultiplier: 1.1, steps: 200) }
        try split.compose(samplingRate: 0.2, noiseMultiplier: 3, steps: 40)
        for k in both.rdp.indices {
            let sum = a.rdp[k] + b.rdp[k]
            XCTAssertEqual(both.rdp[k], sum, accuracy: 1e-12 * sum)
            XCTAssertEqual(split.rdp[k], sum, accuracy: 1e-12 * sum)
        }
        XCTAssertEqual(both.epsilon(delta: 1e-5).epsilon, split.epsilon(delta: 1e-5).epsilon, accuracy: 1e-9)
        XCTAssertGreaterThan(both.epsilon(delta: 1e-5).epsilon, max(a.epsilon(delta: 1e-5).epsilon, b.epsilon(delta: 1e-5).epsilon))
    }

    func testEpsilonAndDeltaAreConsistent() throws {
        let accountant = try accountant(q: 0.05, sigma: 1.2, steps: 500)
        for delta in [1e-3, 1e-5, 1e-9] {
            let epsilon = accountant.epsilon(delta: delta).epsilon
            XCTAssertLessThanOrEqual(accountant.delta(epsilon: epsilon), delta * (1 + 1e-9))
            XCTAssertGreaterThan(accountant.delta(epsilon: epsilon * 0.99), delta)
        }
    }

    // MARK: - Edge cases and errors

    func testEdgeCasesFollowDPAccounting() throws {
        let empty = RDPAccountant()
        XCTAssertEqual(empty.epsilon(delta: 1e-5).epsilon, 0)
        XCTAssertEqual(empty.epsilon(delta: 0).epsilon, 0)
        XCTAssertEqual(empty.delta(epsilon: 0), 0)

        let unsampled = try accountant(q: 0, sigma: 0, steps: 100)  // nobody's data is touched
        XCTAssertEqual(unsampled.rdp, Array(repeating: 0, count: RDPAccountant.defaultOrders.count))
        XCTAssertEqual(unsampled.epsilon(delta: 1e-5).epsilon, 0)

        let noiseless = try accountant(q: 0.01, sigma: 0, steps: 1)
        XCTAssertTrue(noiseless.rdp.allSatisfy { $0 == .infinity })
        XCTAssertEqual(noiseless.epsilon(delta: 1e-5).epsilon, .infinity)
        XCTAssertEqual(noiseless.delta(epsilon: 10), 1)

        var zeroSteps = RDPAccountant()
        try zeroSteps.compose(samplingRate: 0.5, noiseMultiplier: 0, steps: 0)  // no NaN from 0 × ∞
        XCTAssertEqual(zeroSteps.epsilon(delta: 1e-5).epsilon, 0)

        let some = try accountant(q: 0.01, sigma: 1, steps: 10)
        XCTAssertEqual(some.epsilon(delta: 0).epsilon, .infinity)
        XCTAssertEqual(some.epsilon(delta: 1).epsilon, 0)

        XCTAssertEqual(try RDPAccountant.calibrateNoiseMultiplier(targetEpsilon: 1, delta: 1e-5, samplingRate: 0, steps: 100), 0)
        XCTAssertEqual(try RDPAccountant.calibrateNoiseMultiplier(targetEpsilon: 1, delta: 1e-5, samplingRate: 0.1, steps: 0), 0)

        let custom = try RDPAccountant(orders: [2, 8, 32.5])
        XCTAssertEqual(custom.rdp, [0, 0, 0])
    }

    func testErrorsNameTheBadArgument() throws {
        func expect(_ expected: AccountantError, naming word: String, _ body: () throws -> Void) {
            XCTAssertThrowsError(try body()) { error in
                XCTAssertEqual(error as? AccountantError, expected)
                XCTAssertTrue(String(describing: error).contains(word), "\(error)")
            }
        }
        var accountant = RDPAccountant()
        expect(.samplingRateOutOfRange(1.5), naming: "sampling rate") { try accountant.compose(samplingRate: 1.5, noiseMultiplier: 1, steps: 1) }
        expect(.samplingRateOutOfRange(-0.1), naming: "sampling rate") { try accountant.compose(samplingRate: -0.1, noiseMultiplier: 1, steps: 1) }
        expect(.negativeNoiseMultiplier(-1), naming: "noise multiplier") { try accountant.compose(samplingRate: 0.1, noiseMultiplier: -1, steps: 1) }
        expect(.negativeSteps(-3), naming: "steps") { try accountant.compose(samplingRate: 0.1, noiseMultiplier: 1, steps: -3) }
        XCTAssertEqual(accountant.rdp, RDPAccountant().rdp, "a refused compose changes nothing")
        expect(.invalidOrder(1), naming: "order") { _ = try RDPAccountant(orders: [2, 1]) }
        expect(.invalidOrder(.infinity), naming: "order") { _ = try RDPAccountant(orders: [.infinity]) }
        expect(.noOrders, naming: "order") { _ = try RDPAccountant(orders: []) }
        for delta in [0.0, 1.0, -1e-5] {
            expect(.deltaOutOfRange(delta), naming: "delta") {
                _ = try RDPAccountant.calibrateNoiseMultiplier(targetEpsilon: 1, delta: delta, samplingRate: 0.01, steps: 10)
            }
        }
        expect(.epsilonOutOfRange(-1), naming: "epsilon") {
            _ = try RDPAccountant.calibrateNoiseMultiplier(targetEpsilon: -1, delta: 1e-5, samplingRate: 0.01, steps: 10)
        }
        expect(.samplingRateOutOfRange(2), naming: "sampling rate") {
            _ = try RDPAccountant.calibrateNoiseMultiplier(targetEpsilon: 1, delta: 1e-5, samplingRate: 2, steps: 10)
        }
        // 10^18 full-batch steps need sigma beyond the 2^30-wide bracket search.
        expect(.unreachableTarget(epsilon: 1, delta: 1e-5), naming: "reaches") {
            _ = try RDPAccountant.calibrateNoiseMultiplier(targetEpsilon: 1, delta: 1e-5, samplingRate: 1, steps: 1_000_000_000_000_000_000)
        }
    }
}
