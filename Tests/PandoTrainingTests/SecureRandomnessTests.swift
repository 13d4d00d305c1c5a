import Foundation
import PandoEngine
@testable import PandoTraining
import XCTest

/// DP-SGD's cryptographic randomness: the right distributions, and never the same stream twice.
final class SecureRandomnessTests: XCTestCase {
    func testNormalsAreStandardAndStreamsDiffer() {
        let n = 1 << 20
        let storage = FloatStorage(count: n), other = FloatStorage(count: 1024)
        let a = SecureRandomness()
        a.fillStandardNormal(storage.buffer.base, count: n - 1)  // odd counts too
        var sum = 0.0, squares = 0.0, fourth = 0.0, beyond3 = 0
        for i in 0..<(n - 1) {
            let x = Double(storage.buffer[i])
            sum += x; squares += x * x; fourth += x * x * x * x
            if abs(x) > 3 { beyond3 += 1 }
        }
        let m = Double(n - 1)
        XCTAssertEqual(sum / m, 0, accuracy: 5 / m.squareRoot())
        XCTAssertEqual(squares / m, 1, accuracy: 0.01)
        XCTAssertEqual(fourth / m, 3, accuracy: 0.05, "kurtosis of a normal")
        XCTAssertEqual(Double(beyond3) / m, 0.0027, accuracy: 0.0004, "two-sided tail beyond 3σ")
        // A second call continues the stream; a second generator has its own key.
        a.fillStandardNormal(other.buffer.base, count: 1024)
        XCTAssertNotEqual(Array(other.buffer.array.prefix(8)), Array(storage.buffer.array.prefix(8)))
        SecureRandomness().fillStandardNormal(other.buffer.base, count: 1024)
        XCTAssertNotEqual(Array(other.buffer.array.prefix(8)), Array(storage.buffer.array.prefix(8)))
    }

    func testPoissonSamplingHasTheRateAndIsIndependentPerExample() {
        let r = SecureRandomness()
        let n = 200_000, q = 0.05
        let chosen = r.poissonSample(count: n, rate: q)
        XCTAssertEqual(Double(chosen.count), q * Double(n), accuracy: 5 * (q * (1 - q) * Double(n)).squareRoot())
        XCTAssertEqual(chosen, chosen.sorted())
        XCTAssertEqual(Set(chosen).count, chosen.count)
        XCTAssertTrue(chosen.allSatisfy { $0 >= 0 && $0 < n })
        // Halves of the index range are sampled alike (no position bias, e.g. across keystream chunks).
        let low = chosen.filter { $0 < n / 2 }.count
        XCTAssertEqual(Double(low), Double(chosen.count) / 2, accuracy: 5 * (Double(chosen.count) / 4).squareRoot())
        XCTAssertEqual(r.poissonSample(count: 100, rate: 1), Array(0..<100))
        XCTAssertEqual(r.poissonSample(count: 100, rate: 0), [])
    }
}
