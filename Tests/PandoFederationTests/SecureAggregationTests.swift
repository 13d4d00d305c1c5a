import Crypto
import Foundation
import XCTest

@testable import PandoFederation

/// Secure aggregation: Shamir sharing, key agreement, share envelopes, the mask PRG,
/// fixed-point encoding, the neighbour graph and whole rounds with dropouts.
final class SecureAggregationTests: XCTestCase {

    // MARK: Shamir

    func testShamirRoundTripFromAnyThresholdSubset() throws {
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let shares = try Shamir.split(secret: secret, threshold: 4, shareCount: 10)
        XCTAssertEqual(shares.map(\.index), Array(1...10))
        for size in [4, 5, 7, 10] {
            for _ in 0..<5 {
                let subset = Array(shares.shuffled().prefix(size))
                XCTAssertEqual(try Shamir.reconstruct(subset, threshold: 4, maxIndex: 10), secret)
            }
        }
    }

    func testShamirEdgeSecretsAndLengths() throws {
        for secret in [[UInt8](repeating: 0, count: 32), [UInt8](repeating: 0xFF, count: 32), [7], Array(1...7), Array(1...8), Array(0...32)] {
            let shares = try Shamir.split(secret: secret, threshold: 3, indices: [2, 9, 40, 1000, 5])
            XCTAssertEqual(try Shamir.reconstruct(Array(shares.suffix(3)), threshold: 3), secret)
        }
        // threshold 1 is a plain copy; threshold n needs everyone.
        let s = Array(repeating: UInt8(42), count: 32)
        XCTAssertEqual(try Shamir.reconstruct([try Shamir.split(secret: s, threshold: 1, shareCount: 3)[1]], threshold: 1), s)
        let all = try Shamir.split(secret: s, threshold: 5, shareCount: 5)
        XCTAssertEqual(try Shamir.reconstruct(all, threshold: 5), s)
    }

    func testShamirRefusesBadInput() throws {
        let secret = Array(repeating: UInt8(9), count: 32)
        let shares = try Shamir.split(secret: secret, threshold: 3, shareCount: 5)

        XCTAssertThrowsError(try Shamir.reconstruct(Array(shares.prefix(2)), threshold: 3)) {
            XCTAssertEqual($0 as? ShamirError, .tooFewShares(needed: 3, got: 2))
        }
        XCTAssertThrowsError(try Shamir.reconstruct([shares[0], shares[1], shares[1]], threshold: 3)) {
            XCTAssertEqual($0 as? ShamirError, .duplicateIndex(2))
        }
        var zero = shares[0]; zero.index = 0
        XCTAssertThrowsError(try Shamir.reconstruct([zero, shares[1], shares[2]], threshold: 3)) {
            guard case .indexOutOfRange(0, _) = $0 as? ShamirError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try Shamir.reconstruct(Array(shares.suffix(3)), threshold: 3, maxIndex: 4)) {
            guard case .indexOutOfRange(5, _) = $0 as? ShamirError else { return XCTFail("\($0)") }
        }
        var big = shares[0]; big.values[2] = Shamir.prime
        XCTAssertThrowsError(try Shamir.reconstruct([big, shares[1], shares[2]], threshold: 3)) {
            XCTAssertEqual($0 as? ShamirError, .valueOutOfRange(index: 1))
        }
        big.values[2] = .max
        XCTAssertThrowsError(try Shamir.reconstruct([big, shares[1], shares[2]], threshold: 3))
        var short = shares[0]; short.values.removeLast()
        XCTAssertThrowsError(try Shamir.reconstruct([short, shares[1], shares[2]], threshold: 3)) {
            guard case .malformedShare = $0 as? ShamirError else { return XCTFail("\($0)") }
        }
        let other = try Shamir.split(secret: Array(secret.prefix(16)), threshold: 3, shareCount: 5)
        XCTAssertThrowsError(try Shamir.reconstruct([shares[0], shares[1], other[2]], threshold: 3)) {
            guard case .mismatchedShares = $0 as? ShamirError else { return XCTFail("\($0)") }
        }
        // A tampered share is caught by the extra shares (or by the 56-bit chunk check).
        var tampered = shares[4]; tampered.values[0] = Shamir.Field.add(tampered.values[0], 1)
        XCTAssertThrowsError(try Shamir.reconstruct([shares[0], shares[1], shares[2], tampered], threshold: 3)) {
            guard case .inconsistentShares = $0 as? ShamirError else { return XCTFail("\($0)") }
        }
        // Splitting refuses impossible parameters.
        XCTAssertThrowsError(try Shamir.split(secret: secret, threshold: 0, shareCount: 5))
        XCTAssertThrowsError(try Shamir.split(secret: secret, threshold: 6, shareCount: 5))
        XCTAssertThrowsError(try Shamir.split(secret: [], threshold: 2, shareCount: 5))
        XCTAssertThrowsError(try Shamir.split(secret: secret, threshold: 2, indices: [1, 2, 2])) {
            XCTAssertEqual($0 as? ShamirError, .duplicateIndex(2))
        }
        XCTAssertThrowsError(try Shamir.split(secret: secret, threshold: 2, indices: [0, 1, 2]))
        XCTAssertFalse(ShamirError.tooFewShares(needed: 3, got: 2).description.isEmpty)
    }

    func testShamirSerialisation() throws {
        let shares = try Shamir.split(secret: Array(0..<32), threshold: 2, shareCount: 3)
        let wire = shares[1].serialized
        XCTAssertEqual(wire.count, 4 + 2 + 5 * 8)
        XCTAssertEqual(try Shamir.Share(serialized: wire), shares[1])
        XCTAssertThrowsError(try Shamir.Share(serialized: Array(wire.dropLast())))
        XCTAssertThrowsError(try Shamir.Share(serialized: wire + [0]))
        var bad = wire; for i in 6..<14 { bad[i] = 0xFF }
        XCTAssertThrowsError(try Shamir.Share(serialized: bad))
    }

    func testFieldArithmeticMatchesReference() {
        let p = Shamir.prime
        var values: [UInt64] = [0, 1, 2, p - 1, p - 2, 1 << 60, (1 << 61) - 3]
        for _ in 0..<2000 { values.append(UInt64.random(in: 0..<p)) }
        for _ in 0..<4000 {
            let a = values.randomElement()!, b = values.randomElement()!
            XCTAssertEqual(Shamir.Field.mul(a, b), p.dividingFullWidth(a.multipliedFullWidth(by: b)).remainder)
            XCTAssertEqual(Shamir.Field.add(a, b), (a + b) % p)
            XCTAssertEqual(Shamir.Field.sub(a, b), (a + p - b) % p)
        }
        for a in values.prefix(200) where a != 0 { XCTAssertEqual(Shamir.Field.mul(a, Shamir.Field.inverse(a)), 1) }
        for v: UInt64 in [p - 1, p, p + 1, 1 << 62, .max, 0] {
            XCTAssertEqual(Shamir.Field.geqPrimeMask(v) != 0, v >= p, "\(v)")
        }
    }

    // MARK: Keys and envelopes

    func testPairwiseKeysAgreeAndAreBoundToContext() throws {
        let a = SecAggKeyPairs(), b = SecAggKeyPairs()
        let ctx = SecAggContext(federationID: "district-7", round: 3)
        func key(_ mine: SecAggKeyPairs, _ me: String, _ theirs: SecAggKeyPairs, _ peer: String,
                 _ c: SecAggContext = ctx, _ purpose: SecAggKDF.Purpose = .pairwiseMask) throws -> [UInt8] {
            let k = try SecAggKDF.pairwiseKey(myKey: mine.masking, me: me, peerKey: theirs.masking.publicKey, peer: peer,
                                              context: c, purpose: purpose)
            return k.withUnsafeBytes { Array($0) }
        }
        let ab = try key(a, "alpha", b, "beta")
        XCTAssertEqual(ab, try key(b, "beta", a, "alpha"))
        XCTAssertNotEqual(ab, try key(a, "alpha", b, "beta", SecAggContext(federationID: "district-7", round: 4)))
        XCTAssertNotEqual(ab, try key(a, "alpha", b, "beta", SecAggContext(federationID: "district-8", round: 3)))
        XCTAssertNotEqual(ab, try key(a, "alpha", b, "beta", ctx, .shareEncryption))
        XCTAssertNotEqual(ab, try key(a, "alpha", b, "gamma"))
        XCTAssertThrowsError(try key(a, "alpha", b, "alpha"))
    }

    func testShareEnvelopeBindsSenderReceiverAndRound() throws {
        let ctx = SecAggContext(federationID: "f", round: 1)
        let a = SecAggKeyPairs(), b = SecAggKeyPairs(), c = SecAggKeyPairs()
        let kAB = try SecAggKDF.pairwiseKey(myKey: a.encryption, me: "a", peerKey: b.encryption.publicKey, peer: "b",
                                            context: ctx, purpose: .shareEncryption)
        let kBA = try SecAggKDF.pairwiseKey(myKey: b.encryption, me: "b", peerKey: a.encryption.publicKey, peer: "a",
                                            context: ctx, purpose: .shareEncryption)
        let seedShares = try Shamir.split(secret: MaskSeed.random().bytes, threshold: 2, indices: [2, 3])
        let keyShares = try Shamir.split(secret: Array(a.masking.rawRepresentation), threshold: 2, indices: [2, 3])
        let env = try SecAggShareEnvelope.seal(selfSeedShare: seedShares[0], maskKeyShare: keyShares[0],
                                               sender: "a", receiver: "b", context: ctx, key: kAB)
        let opened = try env.open(expectedSender: "a", receiver: "b", receiverIndex: 2, context: ctx, key: kBA)
        XCTAssertEqual(opened.selfSeed, seedShares[0])
        XCTAssertEqual(opened.maskKey, keyShares[0])

        // Wrong index, redirected, replayed in another round, tampered, or opened by a third school.
        XCTAssertThrowsError(try env.open(expectedSender: "a", receiver: "b", receiverIndex: 3, context: ctx, key: kBA))
        var redirected = env; redirected.receiver = "c"
        XCTAssertThrowsError(try redirected.open(expectedSender: "a", receiver: "c", receiverIndex: 2, context: ctx, key: kBA)) {
            XCTAssertEqual($0 as? SecAggError, .decryptionFailed(sender: "a", receiver: "c"))
        }
        var replayed = env; replayed.context.round = 2
        XCTAssertThrowsError(try replayed.open(expectedSender: "a", receiver: "b", receiverIndex: 2, context: replayed.context, key: kBA)) {
            XCTAssertEqual($0 as? SecAggError, .decryptionFailed(sender: "a", receiver: "b"))
        }
        XCTAssertThrowsError(try env.open(expectedSender: "a", receiver: "b", receiverIndex: 2,
                                          context: SecAggContext(federationID: "f", round: 2), key: kBA)) {
            guard case .contextMismatch = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
        var tampered = env; tampered.sealed[20] ^= 1
        XCTAssertThrowsError(try tampered.open(expectedSender: "a", receiver: "b", receiverIndex: 2, context: ctx, key: kBA))
        let kCA = try SecAggKDF.pairwiseKey(myKey: c.encryption, me: "c", peerKey: a.encryption.publicKey, peer: "a",
                                            context: ctx, purpose: .shareEncryption)
        XCTAssertThrowsError(try env.open(expectedSender: "a", receiver: "b", receiverIndex: 2, context: ctx, key: kCA))
    }

    // MARK: Mask PRG

    func testMaskPRGIsDeterministicAndMatchesAESCTR() throws {
        let seed = try MaskSeed(bytes: Array(0..<32))
        let long = MaskPRG.expand(seed, count: MaskPRG.chunkWords + 10)
        // Known answer: AES-256-CTR, key 00…1f, counter block "PMSK" ‖ chunk (BE64) ‖ 00000002.
        XCTAssertEqual(Array(long.prefix(4)), [0xa315_6700, 0xdc26_1d86, 0x1907_2966, 0x1210_feef])
        XCTAssertEqual(Array(long[MaskPRG.chunkWords..<(MaskPRG.chunkWords + 2)]), [0xaae6_3d50, 0x55a1_d16f])
        XCTAssertEqual(MaskPRG.expand(seed, count: 1000), Array(long.prefix(1000)))
        XCTAssertNotEqual(MaskPRG.expand(MaskSeed.random(), count: 8), MaskPRG.expand(MaskSeed.random(), count: 8))
        XCTAssertThrowsError(try MaskSeed(bytes: [1, 2, 3]))

        var v = (0..<50_000).map { UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) }
        let original = v
        MaskPRG.apply(seed, to: &v, sign: .add)
        XCTAssertNotEqual(v, original)
        MaskPRG.apply(seed, to: &v, sign: .subtract)
        XCTAssertEqual(v, original)
        XCTAssertTrue(MaskPRG.expand(seed, count: 0).isEmpty)

        // Roughly uniform: mean of 2^20 words within a few standard errors of 2^31 − 0.5.
        let words = MaskPRG.expand(MaskSeed.random(), count: 1 << 20)
        let mean = words.reduce(0.0) { $0 + Double($1) } / Double(words.count)
        XCTAssertEqual(mean / 0x1p32, 0.5, accuracy: 0.002)
    }

    /// Mask output rate on one core. Run with `swift test -c release --filter Throughput`.
    func testMaskPRGThroughput() throws {
        let count = 11_000_000  // ≈ MiniLM's update: 44 MB of mask
        let seed = MaskSeed.random()
        var buffer = [UInt32](repeating: 0, count: count)
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            MaskPRG.apply(seed, to: &buffer, sign: .add)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let mb = Double(count * 4) / 1e6
        print(String(format: "MaskPRG (AES-256-GCM keystream, add in place): %.1f MB in %.1f ms = %.0f MB/s", mb, best * 1e3, mb / best))

        // For comparison: ChaCha20 keystream via ChaChaPoly over zeros.
        let key = SymmetricKey(size: .bits256), zeros = Data(count: 1 << 16)
        var chachaBest = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            var total = 0
            var n: UInt64 = 0
            while total < count * 4 {
                var nonce = [UInt8](repeating: 0, count: 4)
                withUnsafeBytes(of: n.bigEndian) { nonce.append(contentsOf: $0) }
                let box = try ChaChaPoly.seal(zeros, using: key, nonce: try ChaChaPoly.Nonce(data: nonce))
                total += box.ciphertext.count
                n += 1
            }
            chachaBest = min(chachaBest, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        print(String(format: "ChaCha20-Poly1305 keystream (comparison only): %.0f MB/s", mb / chachaBest))

        // Fixed-point encoding of the same number of values.
        let enc = try FixedPointEncoding(clip: 1, maxWeight: 1000, maxSchools: 10)
        let values = (0..<count).map { Float($0 % 2001 - 1000) * 0.001 }
        var encoded = [UInt32](repeating: 0, count: count + 1)
        let start = DispatchTime.now().uptimeNanoseconds
        try values.withUnsafeBufferPointer { v in try encoded.withUnsafeMutableBufferPointer { try enc.encode(v, weight: 500, into: $0) } }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "FixedPointEncoding.encode (nearest): %.0f M values/s", Double(count) / seconds / 1e6))
        XCTAssertEqual(buffer.count, count)
        XCTAssertEqual(encoded[count], 500)
    }

    // MARK: Fixed point

    func testMaximumSafeScaleCannotOverflow() throws {
        let n = 10, weightCap: UInt32 = 1000, clip = 0.5
        let s = FixedPointEncoding.maximumSafeScale(clip: clip, maxWeight: weightCap, maxSchools: n)
        XCTAssertEqual(s, Double(Int32.max / 10) / (1000 * 0.5))
        let enc = try FixedPointEncoding(clip: clip, maxWeight: weightCap, maxSchools: n)
        XCTAssertEqual(enc.scale, s)
        // n schools at the extremes, all at the cap: the sum reaches ±n·M and does not wrap.
        for extreme: Float in [1e9, -1e9, 0.5, -0.5] {
            let one = try enc.encode([extreme, 0, Float(clip) * 0.25], weight: weightCap)
            var sum = [UInt32](repeating: 0, count: 4)
            for _ in 0..<n { for j in 0..<4 { sum[j] &+= one[j] } }
            XCTAssertEqual(Int64(Int32(bitPattern: sum[0])), (extreme > 0 ? 1 : -1) * Int64(n) * enc.perSchoolBound)
            XCTAssertLessThanOrEqual(Int64(n) * enc.perSchoolBound, Int64(Int32.max))
            let (mean, total) = try enc.decodeMean(sum, contributors: n)
            XCTAssertEqual(total, UInt64(n) * UInt64(weightCap))
            XCTAssertEqual(Double(mean[0]), extreme > 0 ? clip : -clip, accuracy: enc.meanErrorBound(totalWeight: total, contributors: n))
            XCTAssertEqual(Double(mean[2]), clip * 0.25, accuracy: enc.meanErrorBound(totalWeight: total, contributors: n))
        }
        XCTAssertThrowsError(try FixedPointEncoding(clip: clip, maxWeight: weightCap, maxSchools: n, scale: s * 1.0001))
        XCTAssertThrowsError(try FixedPointEncoding(clip: clip, maxWeight: FixedPointEncoding.maximumWeight(maxSchools: n) + 1, maxSchools: n))
        XCTAssertThrowsError(try FixedPointEncoding(clip: 0, maxWeight: 1, maxSchools: n))
        XCTAssertThrowsError(try enc.encode([0.1], weight: weightCap + 1)) {
            XCTAssertEqual($0 as? SecAggError, .weightAboveCap(weightCap + 1, cap: weightCap))
        }
        XCTAssertThrowsError(try enc.encode([0.1, .nan], weight: 1)) { XCTAssertEqual($0 as? SecAggError, .nonFiniteValue(index: 1)) }
        XCTAssertThrowsError(try enc.encode([.infinity], weight: 1))
        XCTAssertEqual(FixedPointEncoding.maximumWeight(maxSchools: 1), UInt32(Int32.max))
    }

    func testQuantisationErrorWithinBound() throws {
        for rounding in [FixedPointEncoding.Rounding.nearest, .stochastic] {
            let n = 7, clip = 1.0
            let enc = try FixedPointEncoding(clip: clip, maxWeight: 5000, maxSchools: n, rounding: rounding)
            let length = 4000
            var sum = [UInt32](repeating: 0, count: length + 1)
            var exact = [Double](repeating: 0, count: length)
            var totalWeight = 0.0
            for _ in 0..<n {
                let x = (0..<length).map { _ in Float.random(in: -1.3...1.3) }
                let w = UInt32.random(in: 1...5000)
                let e = try enc.encode(x, weight: w)
                for j in 0...length { sum[j] &+= e[j] }
                for j in 0..<length { exact[j] += Double(w) * min(max(Double(x[j]), -clip), clip) }
                totalWeight += Double(w)
            }
            let (mean, total) = try enc.decodeMean(sum, contributors: n)
            XCTAssertEqual(Double(total), totalWeight)
            let bound = enc.meanErrorBound(totalWeight: total, contributors: n)
            let worst = zip(mean, exact).map { abs(Double($0) - $1 / totalWeight) }.max()!
            XCTAssertLessThanOrEqual(worst, bound, "\(rounding)")
            XCTAssertLessThan(bound, 1e-5)
        }
    }

    // MARK: Neighbour graph

    func testNeighbourGraphs() throws {
        let ctx = SecAggContext(federationID: "f", round: 9)
        let seed = Array(repeating: UInt8(3), count: 32)
        let complete = try NeighbourGraph(size: 6, topology: .complete, roundSeed: [], context: ctx)
        XCTAssertEqual(complete.neighbours(of: 2), [0, 1, 3, 4, 5])

        let g = try NeighbourGraph(size: 40, topology: .harary(degree: 8), roundSeed: seed, context: ctx)
        for u in 0..<40 {
            XCTAssertEqual(g.neighbours(of: u).count, 8)
            XCTAssertFalse(g.neighbours(of: u).contains(u))
            for v in g.neighbours(of: u) { XCTAssertTrue(g.areNeighbours(v, u)) }
        }
        XCTAssertEqual(g, try NeighbourGraph(size: 40, topology: .harary(degree: 8), roundSeed: seed, context: ctx))
        XCTAssertNotEqual(g, try NeighbourGraph(size: 40, topology: .harary(degree: 8), roundSeed: seed.reversed() + [1], context: ctx))
        XCTAssertNotEqual(g, try NeighbourGraph(size: 40, topology: .harary(degree: 8), roundSeed: seed,
                                                context: SecAggContext(federationID: "f", round: 10)))
        // Not just the identity cycle: the shuffle moved someone's neighbourhood.
        XCTAssertNotEqual(g.neighbours(of: 0), [1, 2, 3, 4, 36, 37, 38, 39])
        // Connected (Harary graphs are k-connected).
        var seen: Set<Int> = [0], frontier = [0]
        while let u = frontier.popLast() { for v in g.neighbours(of: u) where seen.insert(v).inserted { frontier.append(v) } }
        XCTAssertEqual(seen.count, 40)

        XCTAssertEqual(try NeighbourGraph(size: 40, topology: .harary(degree: 7), roundSeed: seed, context: ctx).minimumDegree, 8)
        XCTAssertEqual(try NeighbourGraph(size: 8, topology: .harary(degree: 6), roundSeed: seed, context: ctx).minimumDegree, 6)
        XCTAssertEqual(try NeighbourGraph(size: 7, topology: .harary(degree: 5), roundSeed: seed, context: ctx).minimumDegree, 6)
        XCTAssertThrowsError(try NeighbourGraph(size: 40, topology: .harary(degree: 8), roundSeed: [1, 2], context: ctx))
        XCTAssertThrowsError(try NeighbourGraph(size: 1, topology: .complete, roundSeed: [], context: ctx))
    }

    // MARK: Whole rounds

    func testRoundWithDropoutsAtThreeStagesRecoversWeightedMean() throws {
        let sim = try SecAggTestRound(schools: 10, length: 10_000)
        let (a, b, c) = (sim.ids[2], sim.ids[5], sim.ids[8])
        let result = try XCTUnwrap(try sim.run(dropAfterAdvertising: [a], dropAfterSharing: [b], dropAfterInput: [c]))
        XCTAssertEqual(result.contributors, sim.ids.filter { $0 != a && $0 != b })
        XCTAssertEqual(result.dropped, [b])
        XCTAssertFalse(sim.coordinator.responders.contains(c))
        try sim.check(result)
    }

    func testMaskedInputsAreUncorrelatedWithPlaintext() throws {
        let sim = try SecAggTestRound(schools: 10, length: 10_000)
        let result = try XCTUnwrap(try sim.run(dropAfterAdvertising: [], dropAfterSharing: [sim.ids[0]], dropAfterInput: []))
        try sim.check(result)
        XCTAssertEqual(sim.masked.count, 9)
        for (school, input) in sim.masked {
            let plain = sim.inputs[school]!.values.map(Double.init)
            let masked = input.masked.dropLast().map(Double.init)
            let r = pearson(plain, masked)
            XCTAssertLessThan(abs(r), 0.05, "\(school): r = \(r)")
            // And the encoded plaintext is strongly correlated with the values (the test can see signal).
            let encoded = try sim.config.encoding.encode(sim.inputs[school]!.values, weight: 1).dropLast()
                .map { Double(Int32(bitPattern: $0)) }
            XCTAssertGreaterThan(pearson(plain, encoded), 0.9)
        }
    }

    func testSecAggPlusNeighbourGraphRound() throws {
        let sim = try SecAggTestRound(schools: 20, length: 5_000, topology: .harary(degree: 8))
        XCTAssertEqual(sim.config.threshold, 5)
        for id in sim.ids { XCTAssertEqual(sim.config.neighbours(of: id).count, 8) }
        let (a, b, c) = (sim.ids[1], sim.ids[10], sim.ids[17])
        let result = try XCTUnwrap(try sim.run(dropAfterAdvertising: [a], dropAfterSharing: [b], dropAfterInput: [c]))
        XCTAssertEqual(result.contributors.count, 18)
        // Each school sealed shares for, and masked with, its neighbours only (all 8 advertised;
        // a never shared, so nobody masks with a; b shared, so its neighbours mask with b).
        XCTAssertEqual(sim.sentEnvelopes.count, 19)
        for (school, envelopes) in sim.sentEnvelopes {
            XCTAssertEqual(Set(envelopes.map(\.receiver)), Set(sim.config.neighbours(of: school)))
        }
        for (school, input) in sim.masked {
            XCTAssertEqual(Set(input.pairedWith), Set(sim.config.neighbours(of: school)).subtracting([a]))
        }
        try sim.check(result)
    }

    func testStochasticRoundingRound() throws {
        let sim = try SecAggTestRound(schools: 6, length: 3_000, rounding: .stochastic)
        let result = try XCTUnwrap(try sim.run(dropAfterAdvertising: [], dropAfterSharing: [sim.ids[3]], dropAfterInput: [sim.ids[0]]))
        try sim.check(result, exactEncodings: false)
    }

    func testSchoolRefusesBothSharesOfOnePeer() throws {
        let sim = try SecAggTestRound(schools: 6, length: 100)
        try sim.run(until: .unmasking, dropAfterAdvertising: [], dropAfterSharing: [sim.ids[4]], dropAfterInput: [])
        let request = try XCTUnwrap(sim.request)
        let school = sim.schools[sim.ids[0]]!
        let survivor = sim.ids[1], dropped = sim.ids[4]

        // Both kinds for one peer in a single request.
        var both = request; both.dropped.append(survivor)
        XCTAssertThrowsError(try school.unmask(both)) { XCTAssertEqual($0 as? SecAggError, .conflictingShareRequest(peer: survivor)) }

        // Across requests: first the honest request, then one that flips a survivor to dropped.
        let first = try school.unmask(request)
        XCTAssertTrue(first.shares.contains { $0.owner == survivor && $0.kind == .selfMaskSeed })
        XCTAssertTrue(first.shares.contains { $0.owner == dropped && $0.kind == .maskingKey })
        var flipped = request
        flipped.survivors.removeAll { $0 == survivor }
        flipped.dropped.append(survivor)
        XCTAssertThrowsError(try school.unmask(flipped)) { XCTAssertEqual($0 as? SecAggError, .conflictingShareRequest(peer: survivor)) }
        var revived = request
        revived.dropped.removeAll { $0 == dropped }
        revived.survivors.append(dropped)
        XCTAssertThrowsError(try school.unmask(revived)) { XCTAssertEqual($0 as? SecAggError, .conflictingShareRequest(peer: dropped)) }

        // The same request again is answered identically; other bad requests are refused.
        XCTAssertEqual(try school.unmask(request), first)
        var meDropped = request
        meDropped.survivors.removeAll { $0 == sim.ids[0] }
        XCTAssertThrowsError(try school.unmask(meDropped))
        var few = request; few.survivors = Array(request.survivors.prefix(1))
        XCTAssertThrowsError(try school.unmask(few))
        var stranger = request; stranger.dropped.append("nobody")
        XCTAssertThrowsError(try school.unmask(stranger)) { XCTAssertEqual($0 as? SecAggError, .unknownSchool("nobody")) }
        var otherRound = request; otherRound.context.round += 1
        XCTAssertThrowsError(try school.unmask(otherRound))

        // A school that dropped before sending input reveals nothing.
        XCTAssertThrowsError(try sim.schools[dropped]!.unmask(request)) {
            guard case .wrongState = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
    }

    func testSecondMaskedInputIsRefused() throws {
        let sim = try SecAggTestRound(schools: 5, length: 50)
        try sim.run(until: .unmasking, dropAfterAdvertising: [], dropAfterSharing: [], dropAfterInput: [])
        let id = sim.ids[2]
        let school = sim.schools[id]!
        XCTAssertEqual(school.state, .submittedInput)
        XCTAssertThrowsError(try school.maskedInput(sim.inputs[id]!.values, weight: 1)) {
            guard case .alreadySubmitted = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
        // The coordinator also refuses a replayed input, and anything out of stage.
        XCTAssertThrowsError(try sim.coordinator.receiveMaskedInput(sim.masked[id]!)) {
            guard case .wrongState = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try school.advertiseKeys())
    }

    func testCoordinatorRefusesDuplicateAndMismatchedInputs() throws {
        let sim = try SecAggTestRound(schools: 5, length: 50)
        try sim.run(until: .maskedInput, dropAfterAdvertising: [], dropAfterSharing: [], dropAfterInput: [])
        let id = sim.ids[0]
        let input = try sim.schools[id]!.maskedInput(sim.inputs[id]!.values, weight: sim.inputs[id]!.weight)
        var wrongPairs = input; wrongPairs.pairedWith.removeLast()
        XCTAssertThrowsError(try sim.coordinator.receiveMaskedInput(wrongPairs))
        var short = input; short.masked.removeLast()
        XCTAssertThrowsError(try sim.coordinator.receiveMaskedInput(short))
        try sim.coordinator.receiveMaskedInput(input)
        XCTAssertThrowsError(try sim.coordinator.receiveMaskedInput(input)) {
            guard case .alreadySubmitted = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
    }

    func testTamperedEnvelopeAbortsSchool() throws {
        let sim = try SecAggTestRound(schools: 5, length: 50)
        try sim.run(until: .receiveShares, dropAfterAdvertising: [], dropAfterSharing: [], dropAfterInput: [])
        let id = sim.ids[1]
        var envelopes = try XCTUnwrap(sim.routed[id])
        envelopes[0].sealed[envelopes[0].sealed.count - 1] ^= 0x80
        XCTAssertThrowsError(try sim.schools[id]!.receiveShares(envelopes)) {
            guard case .decryptionFailed = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(sim.schools[id]!.state, .aborted)
        XCTAssertThrowsError(try sim.schools[id]!.maskedInput(sim.inputs[id]!.values, weight: 1)) {
            guard case .aborted = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
    }

    func testTooFewResponsesCannotUnmaskAndCorruptSharesAreCaught() throws {
        let sim = try SecAggTestRound(schools: 6, length: 100)  // t = 3
        try sim.run(until: .unmasking, dropAfterAdvertising: [], dropAfterSharing: [sim.ids[5]], dropAfterInput: [])
        let request = try XCTUnwrap(sim.request)
        let responses = try sim.ids.prefix(5).map { try sim.schools[$0]!.unmask(request) }
        try sim.coordinator.receiveUnmaskResponse(responses[0])
        try sim.coordinator.receiveUnmaskResponse(responses[1])
        XCTAssertThrowsError(try sim.coordinator.finish()) {
            guard case .reconstructionFailed = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try sim.coordinator.receiveUnmaskResponse(responses[0])) // duplicate
        var corrupt = responses[2]
        let k = corrupt.shares.firstIndex { $0.kind == .maskingKey }!
        corrupt.shares[k].share.values[1] = Shamir.Field.add(corrupt.shares[k].share.values[1], 5)
        var wrongIndex = responses[3]; wrongIndex.shares[0].share.index = 1
        XCTAssertThrowsError(try sim.coordinator.receiveUnmaskResponse(wrongIndex))
        try sim.coordinator.receiveUnmaskResponse(corrupt)
        try sim.coordinator.receiveUnmaskResponse(responses[3])
        // Four key shares of the dropped school, one corrupt: reconstruction refuses.
        XCTAssertThrowsError(try sim.coordinator.finish()) {
            guard case .reconstructionFailed(sim.ids[5], _) = $0 as? SecAggError else { return XCTFail("\($0)") }
        }
    }

    /// An unmasking answer that leaves out some of the shares its school holds is refused whole,
    /// so a responder cannot quietly starve a reconstruction.
    func testPartialUnmaskingAnswerIsRefused() throws {
        let ids = ["a", "b", "c", "d"]
        let enc = try FixedPointEncoding(clip: 1, maxWeight: 100, maxSchools: 4)
        let config = try SecAggConfig(context: SecAggContext(federationID: "f", round: 1), schools: ids, vectorLength: 3, encoding: enc)
        let coordinator = SecAggCoordinator(config: config)
        let schools = try ids.map { try SecAggSchool(school: $0, config: config) }
        for s in schools { try coordinator.receiveKeys(try s.advertiseKeys()) }
        let bundles = Dictionary(uniqueKeysWithValues: try coordinator.closeKeyAdvertisement().map { ($0.recipient, $0) })
        for s in schools { try coordinator.receiveShares(try s.shareKeys(bundles[s.school]!), from: s.school) }
        let delivered = try coordinator.closeSharing()
        for s in schools {
            try s.receiveShares(delivered[s.school] ?? [])
            try coordinator.receiveMaskedInput(try s.maskedInput([0.1, -0.2, 0.3], weight: 10))
        }
        let request = try coordinator.closeMaskedInputs()
        var partial = try schools[0].unmask(request)
        partial.shares.removeLast()
        XCTAssertThrowsError(try coordinator.receiveUnmaskResponse(partial)) { XCTAssertTrue("\($0)".contains("revealed shares of 2 of the 3"), "\($0)") }
        for s in schools.dropFirst() { try coordinator.receiveUnmaskResponse(try s.unmask(request)) }
        let (mean, weight) = try coordinator.finish().mean()
        XCTAssertEqual(weight, 40)
        XCTAssertEqual(Double(mean[1]), -0.2, accuracy: 1e-6, "the three complete answers suffice (t = 2)")
    }

    /// A school that advertises a low-order X25519 point would make every key agreement with it
    /// the all-zero secret, which the coordinator could derive: refused before it is relayed.
    func testCoordinatorRefusesLowOrderKeys() throws {
        let enc = try FixedPointEncoding(clip: 1, maxWeight: 100, maxSchools: 3)
        let config = try SecAggConfig(context: SecAggContext(federationID: "f", round: 1), schools: ["a", "b", "c"], vectorLength: 4, encoding: enc)
        let coordinator = SecAggCoordinator(config: config)
        let good = SecAggKeyPairs().publicKeys(school: "a"), other = SecAggKeyPairs().publicKeys(school: "b")
        // u = 0 and u = 1 have order 1 and 4; their shared secret with any key is all zero.
        for bad in [Data(count: 32), Data([1] + [UInt8](repeating: 0, count: 31))] {
            XCTAssertThrowsError(try coordinator.receiveKeys(SecAggPublicKeys(school: "b", encryptionKey: bad, maskingKey: other.maskingKey))) {
                XCTAssertTrue("\($0)".contains("low-order"), "\($0)")
            }
        }
        XCTAssertNoThrow(try coordinator.receiveKeys(good))
    }

    func testConfigurationRefusesUnsafeParameters() throws {
        let enc = try FixedPointEncoding(clip: 1, maxWeight: 10, maxSchools: 4)
        let ctx = SecAggContext(federationID: "f", round: 1)
        XCTAssertThrowsError(try SecAggConfig(context: ctx, schools: ["a", "b", "c", "d", "e"], vectorLength: 4, encoding: enc))
        XCTAssertThrowsError(try SecAggConfig(context: ctx, schools: ["a", "b", "a"], vectorLength: 4, encoding: enc))
        XCTAssertThrowsError(try SecAggConfig(context: ctx, schools: ["a", "b"], vectorLength: 4, encoding: enc))
        XCTAssertThrowsError(try SecAggConfig(context: ctx, schools: ["a", "b", "c"], threshold: 3, vectorLength: 4, encoding: enc))
        let ok = try SecAggConfig(context: ctx, schools: ["b", "c", "a"], vectorLength: 4, encoding: enc)
        XCTAssertEqual(ok.roster.schools, ["a", "b", "c"])
        XCTAssertEqual(ok.threshold, 2)
        XCTAssertThrowsError(try SecAggSchool(school: "z", config: ok))
    }

    // MARK: Helpers

    private func pearson(_ x: [Double], _ y: [Double]) -> Double {
        let n = Double(x.count)
        let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for i in x.indices {
            let dx = x[i] - mx, dy = y[i] - my
            sxy += dx * dy; sxx += dx * dx; syy += dy * dy
        }
        return sxy / (sxx * syy).squareRoot()
    }

    /// `pando bench secagg`'s run: ten schools, three vanishing at three stages, the SecAgg+
    /// graph too; the unmasked mean is exact to the encoding's bound, and the masked update is
    /// the plain one plus a 24-byte header and the weight word.
    func testBenchmarkRunRecoversTheMeanWithinItsBound() throws {
        for neighbours in [nil, 6] as [Int?] {
            let r = try SecureAggregationBenchmark.run(schools: 10, dropouts: 3, values: 5000, neighbours: neighbours)
            XCTAssertEqual(r.contributors, 8, "the school that vanishes before unmasking stays in the sum")
            XCTAssertLessThanOrEqual(r.maxError, r.errorBound)
            XCTAssertGreaterThan(r.errorBound, 0)
            XCTAssertEqual(r.maskedBytesPerSchool, r.plainBytesPerSchool + 4 + MaskedUpdateFile.headerBytes)
            XCTAssertEqual(r.neighbours, neighbours ?? 9)
        }
    }
}

/// An in-process round: one coordinator and n schools exchanging messages directly,
/// with schools leaving at chosen stages.
private final class SecAggTestRound {
    enum Stop: Int, Comparable {
        case receiveShares, maskedInput, unmasking, end
        static func < (a: Stop, b: Stop) -> Bool { a.rawValue < b.rawValue }
    }

    let config: SecAggConfig
    let coordinator: SecAggCoordinator
    let ids: [String]
    var schools: [String: SecAggSchool] = [:]
    var inputs: [String: (values: [Float], weight: UInt32)] = [:]
    var sentEnvelopes: [String: [SecAggShareEnvelope]] = [:]
    var routed: [String: [SecAggShareEnvelope]] = [:]
    var masked: [String: SecAggMaskedInput] = [:]
    var request: SecAggUnmaskRequest?

    init(schools n: Int, length: Int, topology: SecAggTopology = .complete, rounding: FixedPointEncoding.Rounding = .nearest) throws {
        // Ids whose canonical order differs from creation order.
        ids = (0..<n).map { "school-\(String(format: "%02d", ($0 * 7) % n))" }.sorted(by: SecAggRoster.precedes)
        let encoding = try FixedPointEncoding(clip: 1.0, maxWeight: 1000, maxSchools: n, rounding: rounding)
        config = try SecAggConfig(context: SecAggContext(federationID: "district-test", round: 42), schools: ids.shuffled(),
                                  topology: topology, roundSeed: Array(repeating: 0x5A, count: 32),
                                  vectorLength: length, encoding: encoding)
        coordinator = SecAggCoordinator(config: config)
        for id in ids {
            schools[id] = try SecAggSchool(school: id, config: config)
            inputs[id] = ((0..<length).map { _ in Float.random(in: -1.2...1.2) }, UInt32.random(in: 1...1000))
        }
    }

    @discardableResult
    func run(until stop: Stop = .end, dropAfterAdvertising: Set<String>, dropAfterSharing: Set<String>,
             dropAfterInput: Set<String>) throws -> SecAggResult? {
        for id in ids { try coordinator.receiveKeys(try schools[id]!.advertiseKeys()) }
        for bundle in try coordinator.closeKeyAdvertisement() where !dropAfterAdvertising.contains(bundle.recipient) {
            let envelopes = try schools[bundle.recipient]!.shareKeys(bundle)
            sentEnvelopes[bundle.recipient] = envelopes
            try coordinator.receiveShares(envelopes, from: bundle.recipient)
        }
        routed = try coordinator.closeSharing()
        guard stop > .receiveShares else { return nil }
        for id in ids where routed[id] != nil && !dropAfterSharing.contains(id) {
            try schools[id]!.receiveShares(routed[id]!)
        }
        guard stop > .maskedInput else { return nil }
        for id in ids where routed[id] != nil && !dropAfterSharing.contains(id) {
            let input = try schools[id]!.maskedInput(inputs[id]!.values, weight: inputs[id]!.weight)
            masked[id] = input
            try coordinator.receiveMaskedInput(input)
        }
        let request = try coordinator.closeMaskedInputs()
        self.request = request
        guard stop > .unmasking else { return nil }
        for id in request.survivors where !dropAfterInput.contains(id) {
            try coordinator.receiveUnmaskResponse(try schools[id]!.unmask(request))
        }
        return try coordinator.finish()
    }

    /// The unmasked sum equals the sum of the contributors' encodings (exactly, when the
    /// rounding is deterministic) and decodes to the weighted mean within the stated bound.
    func check(_ result: SecAggResult, exactEncodings: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
        let length = config.vectorLength
        if exactEncodings {
            var expected = [UInt32](repeating: 0, count: length + 1)
            for id in result.contributors {
                let e = try config.encoding.encode(inputs[id]!.values, weight: inputs[id]!.weight)
                for j in 0...length { expected[j] &+= e[j] }
            }
            XCTAssertEqual(result.sum, expected, "unmasked sum differs from the plain sum of encodings", file: file, line: line)
        }
        var weighted = [Double](repeating: 0, count: length)
        var total = 0.0
        for id in result.contributors {
            let (x, w) = inputs[id]!
            for j in 0..<length { weighted[j] += Double(w) * min(max(Double(x[j]), -config.encoding.clip), config.encoding.clip) }
            total += Double(w)
        }
        let (mean, totalWeight) = try result.mean()
        XCTAssertEqual(Double(totalWeight), total, file: file, line: line)
        let worst = zip(mean, weighted).map { abs(Double($0) - $1 / total) }.max()!
        XCTAssertLessThanOrEqual(worst, result.meanErrorBound, file: file, line: line)
        XCTAssertLessThan(result.meanErrorBound, 1e-5, file: file, line: line)
    }
}
