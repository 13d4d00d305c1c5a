import Foundation
import PandoTestSupport
import XCTest
@testable import PandoEngine

/// Paths and loaders for the committed fixtures (made by Tests/Fixtures/make_fixtures.py).
typealias Fixture = TestFixtures

/// Largest absolute difference, and the largest reference magnitude.
func maxDifference(_ a: [Float], _ b: [Float]) -> (diff: Float, scale: Float) {
    precondition(a.count == b.count)
    var d: Float = 0, s: Float = 0
    for i in a.indices { d = max(d, abs(a[i] - b[i])); s = max(s, abs(b[i])) }
    return (d, s)
}

func makeTemporaryDirectory() throws -> URL { try TestFixtures.temporaryDirectory() }
