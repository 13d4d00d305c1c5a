import Dispatch
import Foundation
import PandoData
import PandoEngine

/// Runs the whole secure-aggregation protocol in one process, with the state machines the
/// services use, for `schools` schools of which `dropouts` vanish (after advertising keys, at
/// the share, masked-input and unmasking stages in turn), on vectors of `values` values; and
/// plain FedAvg's streaming sum of the same vectors for comparison. What it measures is the
/// protocol's own compute (key agreement, Shamir sharing, sealing, mask expansion, the
/// coordinator's sum and unmasking) and its bytes; transport and training are not in it.
public enum SecureAggregationBenchmark {
    public struct Report: Codable, Sendable {
        public var schools: Int
        public var dropouts: Int
        public var values: Int
        public var threshold: Int
        public var neighbours: Int
        public var contributors: Int
        /// Per school (the slowest): keys and shares, opening the shares, encoding and masking its input, answering the unmasking request.
        public var schoolSharingSeconds: Double
        public var schoolMaskingSeconds: Double
        public var schoolUnmaskSeconds: Double
        /// Coordinator: adding every masked input, then removing the masks and decoding the mean.
        public var coordinatorSumSeconds: Double
        public var coordinatorUnmaskSeconds: Double
        /// Every school's protocol steps and the coordinator's, one after another (one process).
        public var totalSeconds: Double
        /// Plain FedAvg: the streaming weighted sum of the same (unmasked) vectors.
        public var plainSumSeconds: Double
        public var maskedBytesPerSchool: Int
        public var plainBytesPerSchool: Int
        /// Key material one school sends and receives (raw bytes: keys, sealed shares, revealed shares).
        public var keyBytesPerSchool: Int
        /// |decoded mean − exact mean of the clipped values|, and the encoding's bound on it.
        public var maxError: Double
        public var errorBound: Double

        public var table: String {
            func ms(_ s: Double) -> String { String(format: "%.0f ms", 1e3 * s) }
            return """
            secure aggregation: \(schools) schools, \(dropouts) vanish (\(contributors) inputs unmasked), \(values) values each, \
            t = \(threshold), \(neighbours) neighbours each
              in all:       \(ms(totalSeconds)) of protocol compute for the round (every school's steps and the coordinator's, one after another)
              per school:   keys + shares \(ms(schoolSharingSeconds)), encode + mask \(ms(schoolMaskingSeconds)), unmask answer \(ms(schoolUnmaskSeconds))
              coordinator:  sum of \(contributors) masked inputs \(ms(coordinatorSumSeconds)), unmasking + decoding \(ms(coordinatorUnmaskSeconds)) \
            (plain FedAvg sum of the same inputs: \(ms(plainSumSeconds)))
              bytes a school: masked update \(maskedBytesPerSchool) (\(String(format: "%.5f", Double(maskedBytesPerSchool) / Double(plainBytesPerSchool)))× Float32's \(plainBytesPerSchool)) \
            + key material \(keyBytesPerSchool)
              exactness: max error \(String(format: "%.2e", maxError)) (bound \(String(format: "%.2e", errorBound)))
            """
        }
    }

    public static func run(schools n: Int, dropouts: Int, values: Int, neighbours: Int? = nil, threshold: Int? = nil,
                           clip: Double = 1, examples: ClosedRange<Int> = 100...1000) throws -> Report {
        precondition(n >= 3 && dropouts >= 0 && dropouts < n && values > 0)
        let ids = (0..<n).map { String(format: "school-%03d", $0) }
        var seed = [UInt8](repeating: 7, count: 32)
        seed[0] = UInt8(truncatingIfNeeded: n)
        let encoding = try FixedPointEncoding(clip: clip, maxWeight: UInt32(examples.upperBound), maxSchools: n)
        let config = try SecAggConfig(context: SecAggContext(federationID: "bench", round: 1), schools: ids,
                                      topology: neighbours.map { .harary(degree: $0) } ?? .complete, roundSeed: seed,
                                      threshold: threshold, vectorLength: values, encoding: encoding)
        let coordinator = SecAggCoordinator(config: config)
        let members = try ids.map { try SecAggSchool(school: $0, config: config) }
        // Who vanishes where: the last `dropouts` schools, at shares, masked input, unmasking in turn.
        var vanishAt: [String: Int] = [:]
        for (i, s) in ids.suffix(dropouts).enumerated() { vanishAt[s] = 1 + i % 3 }
        var rng = SplitMix64(seed: 0xBE7C)
        let weights = ids.map { _ in UInt32(examples.lowerBound + Int(rng.next() % UInt64(examples.count))) }
        func vector(_ i: Int) -> [Float] {
            let key = CounterRandom.key(UInt64(i), 91)
            return (0..<values).map { 1e-3 * CounterRandom.normal(key, $0) }
        }
        func time<T>(_ body: () throws -> T) rethrows -> (T, Double) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let v = try body()
            return (v, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }

        var sharing = 0.0, masking = 0.0, unmaskAnswer = 0.0, revealed = 0, sealedBytes = 0, total = 0.0
        for m in members { try coordinator.receiveKeys(try m.advertiseKeys()) }
        let bundles = Dictionary(uniqueKeysWithValues: try coordinator.closeKeyAdvertisement().map { ($0.recipient, $0) })
        for m in members where vanishAt[m.school] != 1 {
            let (envelopes, t) = try time { try m.shareKeys(bundles[m.school]!) }
            sharing = max(sharing, t)
            total += t
            sealedBytes = envelopes.first?.sealed.count ?? 0
            try coordinator.receiveShares(envelopes, from: m.school)
        }
        let delivered = try coordinator.closeSharing()
        var sumSeconds = 0.0
        var exact = [Double](repeating: 0, count: values)
        var totalWeight = 0.0
        var maskedBytes = 0
        var layout = ParameterLayout()
        layout.append("update", shape: [values], decays: false)
        let plain = DeltaAccumulator(layout: layout)
        var plainSeconds = 0.0
        for (i, m) in members.enumerated() where vanishAt[m.school] == nil || vanishAt[m.school]! > 2 {
            let (_, tOpen) = try time { try m.receiveShares(delivered[m.school] ?? []) }
            let x = vector(i)
            let (input, tMask) = try time { try m.maskedInput(x, weight: weights[i]) }
            sharing = max(sharing, tOpen)
            masking = max(masking, tMask)
            total += tOpen + tMask
            maskedBytes = MaskedUpdateFile.size(words: input.masked.count)
            let (_, tSum) = try time { try coordinator.receiveMaskedInput(input) }
            sumSeconds += tSum
            total += tSum
            let buffer = ParameterBuffer(layout: plain.layout)
            for j in 0..<values { buffer.buffer[j] = x[j] }
            let (_, tPlain) = time { plain.add(buffer, weight: Int(weights[i])) }
            plainSeconds += tPlain
            totalWeight += Double(weights[i])
            for j in 0..<values { exact[j] += Double(weights[i]) * min(max(Double(x[j]), -clip), clip) }
        }
        let request = try coordinator.closeMaskedInputs()
        for m in members where request.survivors.contains(m.school) && vanishAt[m.school] != 3 {
            let (response, t) = try time { try m.unmask(request) }
            unmaskAnswer = max(unmaskAnswer, t)
            total += t
            revealed = max(revealed, response.shares.count)
            try coordinator.receiveUnmaskResponse(response)
        }
        let (mean, tUnmask) = try time { try coordinator.finish().mean() }
        total += tUnmask
        // Raw bytes of one school's key material: its two keys out and its k neighbours' in (32 B
        // each), k sealed share pairs out and k in, and the shares it reveals (4 + 40 B each).
        let k = config.graph.minimumDegree
        let keyBytes = 64 + 64 * k + 2 * sealedBytes * k + 44 * revealed
        var worst = 0.0
        for j in 0..<values { worst = max(worst, abs(Double(mean.mean[j]) - exact[j] / totalWeight)) }
        return Report(schools: n, dropouts: dropouts, values: values, threshold: config.threshold, neighbours: config.graph.minimumDegree,
                      contributors: request.survivors.count, schoolSharingSeconds: sharing, schoolMaskingSeconds: masking,
                      schoolUnmaskSeconds: unmaskAnswer, coordinatorSumSeconds: sumSeconds, coordinatorUnmaskSeconds: tUnmask, totalSeconds: total,
                      plainSumSeconds: plainSeconds, maskedBytesPerSchool: maskedBytes, plainBytesPerSchool: 4 * values,
                      keyBytesPerSchool: keyBytes, maxError: worst,
                      errorBound: encoding.meanErrorBound(totalWeight: UInt64(totalWeight), contributors: request.survivors.count))
    }
}

