import Foundation
import NIOConcurrencyHelpers
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import PandoWire
import XCTest

/// Secure aggregation over the real services (issue 11): coordinator and schools over mutual
/// TLS run the protocol, schools vanish at different stages, and the committed version is the
/// weighted mean of exactly the survivors' updates, which the coordinator never saw one by one.
final class SecureAggregationEndToEndTests: XCTestCase {
    /// Seven schools of different sizes on the synthetic task.
    static func schools(_ count: Int) throws -> [LoopbackFederation.School] {
        try (0..<count).map { i in
            LoopbackFederation.School(id: "school-\(i)", training: try Federation.dataset(synthetic(count: 30 + 9 * i, seed: UInt64(300 + i))),
                                      validation: try Federation.dataset(synthetic(count: 12, seed: UInt64(400 + i))))
        }
    }

    func testRoundCommitsTheSurvivorsMeanAfterDropoutsAtThreeStages() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-secagg")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.minSchools = 7
        config.rounds.quorum = 4
        config.rounds.federatedEvaluation = false
        var settings = SecureAggregationSettings()
        settings.threshold = 3
        settings.clip = 0.5
        settings.stageDeadline = .seconds(30)
        config.secureAggregation = settings
        let logs = state.appendingPathComponent("schools")
        let federation = try LoopbackFederation(configuration: config, schools: try Self.schools(7), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: logs, logger: LogCapture().logger("secagg"))
        // school-4 never sends shares, school-5 never sends its masked update, school-6 sends it
        // and then vanishes before unmasking: its input stays in the sum.
        federation.secureDropouts = ["school-4": "shares", "school-5": "masked-input", "school-6": "unmasking"]
        let inputs = NIOLockedValueBox<[Int: [String: (values: [Float], weight: UInt32)]]>([:])
        let uploads = NIOLockedValueBox<[String: [UInt8]]>([:])
        let round = NIOLockedValueBox<[String: Int]>([:])
        federation.prepareAgent = { id, agent in
            agent.observeSecureInput = { values, weight in
                inputs.withLockedValue { all in
                    let r = round.withLockedValue { $0[id, default: 0] + 1 }
                    round.withLockedValue { $0[id] = r }
                    all[r, default: [:]][id] = (values, weight)
                }
            }
            agent.tamper = { file in
                if round.withLockedValue({ $0[id] }) == 1 { uploads.withLockedValue { $0[id] = Array(try! Data(contentsOf: file)) } }
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.count, 2)
        let first = reports[0]
        XCTAssertTrue(first.committed, "\(first.leftOut)")
        let contributors = ["school-0", "school-1", "school-2", "school-3", "school-6"]
        XCTAssertEqual(first.accepted.sorted(), contributors)
        XCTAssertTrue(first.leftOut["school-4"]?.contains("shares") ?? false, "\(first.leftOut)")
        XCTAssertTrue(first.leftOut["school-5"]?.contains("masked-input") ?? false, "\(first.leftOut)")
        XCTAssertNil(first.leftOut["school-6"], "its input is in the sum even though it vanished before unmasking")
        XCTAssertTrue(reports[1].committed)
        XCTAssertEqual(reports[1].accepted.count, 7, "the vanished schools reconnect and take part in the next round")

        // The new version is the base plus the weighted mean of the contributors' clipped values.
        let store = try CheckpointStore(folder: state.appendingPathComponent("versions"), readOnly: true)
        let (base, _) = try BertModel.load(from: store.folder(of: first.baseVersion))
        let (next, _) = try BertModel.load(from: store.folder(of: first.version))
        let selection = TensorSelection(layout: base.layout, plan: config.plan)
        let seen = try XCTUnwrap(inputs.withLockedValue { $0[1] })
        let total = contributors.reduce(0.0) { $0 + Double(seen[$1]!.weight) }
        var expected = [Double](repeating: 0, count: selection.trainedCount)
        for s in contributors {
            let (values, weight) = seen[s]!
            for j in values.indices { expected[j] += Double(weight) * min(max(Double(values[j]), -0.5), 0.5) / total }
        }
        var worst = 0.0, offset = 0
        for spec in selection.trained {
            for k in 0..<spec.count {
                let moved = Double(next.parameters.buffer[spec.offset + k]) - Double(base.parameters.buffer[spec.offset + k])
                worst = max(worst, abs(moved - expected[offset + k]))
            }
            offset += spec.count
        }
        // Fixed-point error (≤ 5 / (2·s·Σw), ~1e-7 here) plus one Float rounding of the new weights.
        XCTAssertLessThan(worst, 2e-6, "the committed version moved by the survivors' mean")
        XCTAssertGreaterThan(expected.map(abs).max() ?? 0, 1e-3, "the schools did train")

        // What the coordinator received from a school is indistinguishable from noise: its
        // fixed-point words are uncorrelated with the school's values.
        let bytes = try XCTUnwrap(uploads.withLockedValue { $0["school-0"] })
        XCTAssertEqual(bytes.count, MaskedUpdateFile.size(words: selection.trainedCount + 1))
        let words = stride(from: MaskedUpdateFile.headerBytes, to: bytes.count, by: 4).map { o in
            UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
        }
        let plain = seen["school-0"]!.values.map(Double.init)
        let masked = words.prefix(plain.count).map { Double(Int32(bitPattern: $0)) }
        XCTAssertLessThan(abs(correlation(plain, masked)), 6 / Double(plain.count).squareRoot(), "masked words carry no trace of the values")
        XCTAssertNotEqual(words.last, seen["school-0"]!.weight, "even the weight slot is masked")

        // The audit records the protocol, and the officer's check passes with every school's log.
        let audit = state.appendingPathComponent("audit.jsonl")
        let records = try AuditRecord.readAll(audit).records
        let secure = try XCTUnwrap(records.first { $0.event == .secureAggregation && $0.round == first.round }?.secureAggregation)
        XCTAssertEqual(secure["threshold"]?.intValue, 3)
        XCTAssertEqual(secure["outcome"]?.stringValue, "unmasked")
        XCTAssertEqual(secure["contributors"]?.arrayValue?.compactMap(\.stringValue), contributors)
        XCTAssertEqual(secure["dropped"]?.objectValue?.mapValues { $0.stringValue ?? "" },
                       ["school-4": "shares", "school-5": "masked-input", "school-6": "unmasking"])
        XCTAssertEqual(secure["keys"]?.objectValue?.count, 7, "all seven advertised keys")
        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let clientLogs = (0..<7).map { logs.appendingPathComponent("school-\($0).jsonl") }
        let report = AuditVerifier.verify(log: audit, keys: [key], clientLogs: clientLogs)
        XCTAssertTrue(report.isValid, report.render())

        // A coordinator that records other keys for a school than the school advertised is caught.
        var objects = records.map(\.object)
        let i = try XCTUnwrap(objects.firstIndex { $0["event"]?.stringValue == "secureAggregation" })
        var fields = objects[i]["secureAggregation"]!.objectValue!
        var keys = fields["keys"]!.objectValue!
        keys["school-1"] = .string(String(repeating: "0", count: 64))
        fields["keys"] = .object(keys)
        objects[i]["secureAggregation"] = .object(fields)
        let signer = try CoordinatorSigningKey.load(from: CoordinatorLedger.defaultKeyURL(in: state))
        let forged = work.appendingPathComponent("forged.jsonl")
        try AuditFormat.resealed(objects, key: signer).write(to: forged)
        let caught = AuditVerifier.verify(log: forged, keys: [key], clientLogs: clientLogs)
        XCTAssertFalse(caught.isValid)
        XCTAssertTrue(caught.render().contains("advertised keys"), caught.render())
    }

    /// SecAgg+ (each school masks with 4 of the 6 others) composed with example-level DP-SGD at
    /// every school: the round commits, each contributor's DP spend is in the audit, and the
    /// officer's check (signatures, school logs, key hashes, ε recomputed) passes.
    func testSecAggPlusGraphWithDPSGD() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-secagg-plus")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.minSchools = 7
        config.rounds.quorum = 6
        config.rounds.federatedEvaluation = false
        config.plan.privacy = RoundPrivacy(noiseMultiplier: 1.1, maxGradientNorm: 1, delta: 1e-5)
        var settings = SecureAggregationSettings()
        settings.neighbours = 4
        settings.stageDeadline = .seconds(30)
        config.secureAggregation = settings
        let logs = state.appendingPathComponent("schools")
        let federation = try LoopbackFederation(configuration: config, schools: try Self.schools(7), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: logs, logger: LogCapture().logger("secagg"))
        federation.secureDropouts = ["school-2": "masked-input"]
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.accepted.count, 6)
        XCTAssertTrue(report.leftOut["school-2"]?.contains("masked-input") ?? false, "\(report.leftOut)")
        let audit = state.appendingPathComponent("audit.jsonl")
        let records = try AuditRecord.readAll(audit).records
        let secure = try XCTUnwrap(records.first { $0.event == .secureAggregation }?.secureAggregation)
        XCTAssertEqual(secure["graph"]?.stringValue, "harary-4")
        XCTAssertEqual(secure["threshold"]?.intValue, 3, "a majority of 4 neighbours")
        let received = records.filter { $0.event == .updateReceived }
        XCTAssertEqual(received.count, 6)
        XCTAssertTrue(received.allSatisfy { $0.privacy?["noiseMultiplier"] != nil }, "each school's DP spend is recorded")
        let key = try AuditPublicKey.load(from: state.appendingPathComponent("keys/coordinator.key.pub"))
        let verified = AuditVerifier.verify(log: audit, keys: [key], clientLogs: (0..<7).map { logs.appendingPathComponent("school-\($0).jsonl") },
                                            privacy: PrivacyAccounting.recordedEpsilon)
        XCTAssertTrue(verified.isValid, verified.render())
        XCTAssertEqual(verified.privacyRecordsChecked, 6)
    }

    /// select → compress → mask: with top-k (error feedback) each school masks the values its
    /// compression kept, the round commits their mean, and the residual carries to the next round.
    func testCompressionComposesWithSecureAggregation() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-secagg-topk")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.minSchools = 4
        config.rounds.quorum = 4
        config.rounds.federatedEvaluation = false
        config.plan.compression = .topK(density: 0.1)
        config.secureAggregation = SecureAggregationSettings()
        let federation = try LoopbackFederation(configuration: config, schools: try Self.schools(4), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("secagg"))
        let firstInputs = NIOLockedValueBox<[String: (values: [Float], weight: UInt32)]>([:])
        federation.prepareAgent = { id, agent in
            agent.observeSecureInput = { values, weight in
                firstInputs.withLockedValue { if $0[id] == nil { $0[id] = (values, weight) } }
            }
        }
        let reports = try await federation.run()
        XCTAssertEqual(reports.map(\.committed), [true, true])
        let seen = firstInputs.withLockedValue { $0 }
        XCTAssertEqual(seen.count, 4)
        for (school, input) in seen {
            let kept = input.values.filter { $0 != 0 }.count
            XCTAssertLessThanOrEqual(kept, Int((0.1 * Double(input.values.count)).rounded(.up)) + 1, "\(school) masked only what top-k kept")
            XCTAssertGreaterThan(kept, 0)
        }
        let store = try CheckpointStore(folder: state.appendingPathComponent("versions"), readOnly: true)
        let (base, _) = try BertModel.load(from: store.folder(of: reports[0].baseVersion))
        let (next, _) = try BertModel.load(from: store.folder(of: reports[0].version))
        let selection = TensorSelection(layout: base.layout, plan: config.plan)
        let total = seen.values.reduce(0.0) { $0 + Double($1.weight) }
        var worst = 0.0, offset = 0
        for spec in selection.trained {
            for k in 0..<spec.count {
                let expected = seen.values.reduce(0.0) { $0 + Double($1.weight) * Double($1.values[offset + k]) } / total
                let moved = Double(next.parameters.buffer[spec.offset + k]) - Double(base.parameters.buffer[spec.offset + k])
                worst = max(worst, abs(moved - expected))
            }
            offset += spec.count
        }
        XCTAssertLessThan(worst, 2e-6)
        for i in 0..<4 {
            XCTAssertTrue(FileManager.default.fileExists(atPath: work.appendingPathComponent("run/schools/school-\(i)/cache/topk-residual.bin").path),
                          "school-\(i) keeps its top-k residual")
        }
        let started = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl")).records.first { $0.event == .roundStarted }
        XCTAssertEqual(started?.strategyParameters?["updateTransforms"]?.stringValue,
                       "select(frozenEmbeddings=1) → topk(density=0.1,errorFeedback=1) → secagg-mask(fixedPointBits=32)")
    }

    func testSchoolThatRequiresSecureAggregationDeclinesPlainRounds() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-secagg-required")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("secagg"))
        federation.schoolSecureAggregation = ["west": SchoolSecureAggregationPolicy(required: true)]
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertTrue(report.committed)
        XCTAssertEqual(report.accepted.sorted(), ["north", "south"])
        XCTAssertTrue(report.leftOut["west"]?.contains("secure-aggregation-required") ?? false, "\(report.leftOut)")
    }

    func testSchoolRefusesASetupBelowItsMinimumOfSurvivors() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-secagg-minimum")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.minSchools = 4
        config.rounds.federatedEvaluation = false
        var settings = SecureAggregationSettings()
        settings.minimumSurvivors = 2
        config.secureAggregation = settings
        let federation = try LoopbackFederation(configuration: config, schools: try Self.schools(4), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("secagg"))
        federation.schoolSecureAggregation = ["school-3": SchoolSecureAggregationPolicy(required: true, minimumSurvivors: 3)]
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        // The other three still hold t = 2 shares of each other's secrets and make the quorum.
        XCTAssertTrue(report.committed, "\(report.leftOut)")
        XCTAssertEqual(report.accepted.sorted(), ["school-0", "school-1", "school-2"])
        XCTAssertTrue(report.leftOut["school-3"]?.contains("secure-aggregation-too-few") ?? false, "\(report.leftOut)")
    }

    /// A coordinator that sends all schools but one a tiny fixed-point scale would have that one's
    /// input nearly alone in the sum. Each school binds its keys to the setup it was sent, so the
    /// odd one out cannot open its neighbours' shares, nor they its own, and it is never summed.
    func testSchoolsGivenDifferentSetupsAreNotSummedTogether() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-secagg-split-setup")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.minSchools = 4
        config.rounds.quorum = 3
        config.rounds.federatedEvaluation = false
        var settings = SecureAggregationSettings()
        settings.threshold = 2
        settings.stageDeadline = .seconds(20)
        config.secureAggregation = settings
        let federation = try LoopbackFederation(configuration: config, schools: try Self.schools(4), workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("secagg"))
        federation.coordinator.alterAssignment = { school, a in
            if school != "school-0" { a.secureAggregation?.scale /= 1e6 }
        }
        let reports = try await federation.run()
        let report = try XCTUnwrap(reports.first)
        XCTAssertFalse(report.committed && report.accepted.contains("school-0"),
                       "school-0's input was summed with inputs encoded at another scale: \(report.accepted), \(report.leftOut)")
        XCTAssertNotNil(report.leftOut["school-0"], "\(report.leftOut)")
    }
}

private func correlation(_ a: [Double], _ b: [Double]) -> Double {
    let n = Double(a.count)
    let ma = a.reduce(0, +) / n, mb = b.reduce(0, +) / n
    var sab = 0.0, saa = 0.0, sbb = 0.0
    for i in a.indices {
        sab += (a[i] - ma) * (b[i] - mb)
        saa += (a[i] - ma) * (a[i] - ma)
        sbb += (b[i] - mb) * (b[i] - mb)
    }
    return sab / (saa * sbb).squareRoot()

}
