import Foundation
import Logging
import PandoCertificates
import PandoData
import PandoEngine
import PandoFederation
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTransport
import PandoWire
import XCTest

/// Hostile updates over the network (issue 17, item 7): a scripted school, "mallory", with a
/// real certificate, takes part beside three honest schools and sends what an attacker
/// would. Each attack is left out with its reason in the audit log; the round commits with
/// the honest schools.
final class HostileUpdateTests: XCTestCase {
    /// What mallory does when it gets an assignment: returns the result to send (or nil).
    typealias Script = @Sendable (_ assignment: RoundAssignment, _ conn: PandoConnection, _ folder: URL, _ parameters: Int) async throws -> Void

    struct Outcome {
        let reports: [FederatedRoundReport]
        let records: [AuditRecord]
        func reasons(_ school: String) -> [String] {
            records.filter { $0.school == school && $0.event == .updateRejected }.compactMap(\.reason)
        }
    }

    func run(rounds: Int = 1, minSchools: Int = 4, slowHonest: Bool = false, launchAtListen: Bool = true,
             startMallory: (LoopbackFederation, @escaping @Sendable () -> Void) -> Void = { _, _ in },
             onConnect: (@Sendable (PandoConnection) async throws -> Void)? = nil,
             script: @escaping Script) async throws -> Outcome {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-hostile-update")
        let state = work.appendingPathComponent("state")
        let model = try TestFixtures.tinyModelFolder()
        var config = Federation.configuration(model: model, state: state, rounds: rounds)
        config.rounds.minSchools = minSchools
        config.rounds.roundDeadline = .seconds(20)
        config.rounds.federatedEvaluation = false
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: LogCapture().logger("e2e"))
        try CertificateAuthority(directory: federation.certificates).issueSchool(id: "mallory")
        federation.coordinator.reconnectGrace = .milliseconds(300)  // a mallory that was closed is not waited for
        // What an update carries: the trained tensors (the embedding tables stay frozen).
        let layout = try BertModel.load(from: model, head: ClassifierHead(objective: TaskKind.classification.objective,
                                                                          labels: Federation.labels)).0.layout
        let parameters = TensorSelection(layout: layout, frozen: TensorSelection.embeddingTables).trainedCount
        if slowHonest {
            federation.prepareAgent = { id, agent in
                if id == "north" { agent.tamper = { _ in Thread.sleep(forTimeInterval: 1.5) } }
            }
        }
        let folder = work.appendingPathComponent("mallory")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let malloryTask = TaskBox()
        let launch: @Sendable (Int) -> Void = { port in
            let transport = federation.schoolConfiguration("mallory", port: port).transport
            malloryTask.set(Task {
                let client = try SchoolClient(configuration: transport, logger: LogCapture().logger("mallory"))
                try await client.withConnection { conn in
                    try await onConnect?(conn)
                    while true {
                        let message = try await conn.receive()
                        switch message {
                        case .roundAssignment(let a) where a.task == .train:
                            try await script(a, conn, folder, parameters)
                        case .goodbye: return
                        default: continue
                        }
                    }
                }
            })
        }
        let port = PortBox()
        federation.coordinator.onListening = { p in
            port.value = p
            if launchAtListen { launch(p) }
        }
        startMallory(federation) { launch(port.value) }
        let reports = try await federation.run()
        malloryTask.cancel()
        let (records, _) = try AuditRecord.readAll(state.appendingPathComponent("audit.jsonl"))
        return Outcome(reports: reports, records: records)
    }

    /// Uploads `values` as mallory's delta for the assignment and sends a completed result.
    static func send(_ values: (Int) -> Float, count: Int, _ a: RoundAssignment, _ conn: PandoConnection, _ folder: URL,
                     examples: UInt64 = 40, resultRound: UInt64? = nil, nonce: WireToken? = nil) async throws -> ObjectRef {
        var data = Data(capacity: 4 * count)
        for i in 0..<count { withUnsafeBytes(of: values(i).bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        let file = folder.appendingPathComponent("r\(a.round)-\(UUID().uuidString).delta")
        try data.write(to: file)
        let digest = ObjectDigest.of(data)
        let id = WireToken("update-r\(a.round)")!
        _ = try? await conn.sendObject(id: id, kind: .update, file: file, sha256: digest)
        let ref = ObjectRef(id: id, size: UInt64(data.count), sha256: digest)
        try await conn.send(.roundResult(RoundResult(round: resultRound ?? a.round, nonce: nonce ?? a.nonce, status: .completed,
                                                     update: ref, exampleCount: examples, metrics: [:])))
        return ref
    }

    func assertHonestRoundCommits(_ o: Outcome, file: StaticString = #filePath, line: UInt = #line) {
        for r in o.reports {
            XCTAssertTrue(r.committed, "round \(r.round): \(r.leftOut)", file: file, line: line)
            XCTAssertTrue(Set(["north", "south", "west"]).isSubset(of: r.accepted), "\(r.accepted)", file: file, line: line)
        }
    }

    func testWrongSizeIsLeftOut() async throws {
        let o = try await run { a, conn, folder, n in _ = try await Self.send({ _ in 0 }, count: n - 3, a, conn, folder) }
        assertHonestRoundCommits(o)
        XCTAssertTrue(o.reasons("mallory").contains { $0.contains("names no stored update") }, "\(o.reasons("mallory"))")
    }

    func testHugeNormIsLeftOut() async throws {
        let o = try await run { a, conn, folder, n in _ = try await Self.send({ _ in 1 }, count: n, a, conn, folder) }
        assertHonestRoundCommits(o)
        XCTAssertTrue(o.reasons("mallory").contains { $0.contains("exceeds the bound") }, "\(o.reasons("mallory"))")
    }

    /// Round 2: the same bytes as round 1's update (accepted then) are a replay.
    func testReplayedUpdateIsLeftOut() async throws {
        let o = try await run(rounds: 2) { a, conn, folder, n in
            _ = try await Self.send({ i in Float(i % 7) * 1e-6 }, count: n, a, conn, folder)
        }
        assertHonestRoundCommits(o)
        XCTAssertTrue(o.reasons("mallory").contains { $0.contains("replay: the same bytes") }, "\(o.reasons("mallory"))")
        XCTAssertFalse(o.reports[1].accepted.contains("mallory"))
    }

    /// Round 2: mallory sends its round-1 result again (old round, old nonce).
    func testReplayedResultIsRecordedAndIgnored() async throws {
        let first = ResultBox()
        let o = try await run(rounds: 2) { a, conn, folder, n in
            if a.round == 1 {
                first.set(try await Self.send({ i in Float(i % 5) * 1e-6 }, count: n, a, conn, folder), nonce: a.nonce)
            } else if let (ref, nonce) = first.get() {
                try await conn.send(.roundResult(RoundResult(round: 1, nonce: nonce, status: .completed, update: ref, exampleCount: 40, metrics: [:])))
                // Then its real round-2 work, so the round need not wait for its deadline.
                _ = try await Self.send({ i in Float(i % 3) * 1e-6 }, count: n, a, conn, folder)
            }
        }
        assertHonestRoundCommits(o)
        let round2 = o.records.filter { $0.school == "mallory" && $0.round == 2 && $0.event == .updateRejected }.compactMap(\.reason)
        XCTAssertTrue(round2.contains { $0.contains("late or replayed") }, "\(round2)")
    }

    /// Mallory joins after round 1's selection and sends a result for it anyway.
    func testResultFromAnUnselectedSchoolIsRecordedAndIgnored() async throws {
        let o = try await run(minSchools: 3, slowHonest: true, launchAtListen: false, startMallory: { federation, start in
            let started = StartOnce(start)
            federation.coordinator.onProgress = { line in if line.contains("assignment sent") { started.fire() } }
        }, onConnect: { conn in
            let digest = ObjectDigest.of(Data([1, 2, 3]))
            try await conn.send(.roundResult(RoundResult(round: 1, nonce: "0123456789abcdef", status: .completed,
                                                         update: ObjectRef(id: "update-r1", size: 3, sha256: digest),
                                                         exampleCount: 1_000, metrics: [:])))
        }) { _, _, _, _ in }
        assertHonestRoundCommits(o)
        XCTAssertTrue(o.reasons("mallory").contains { $0.contains("did not select") }, "\(o.reasons("mallory"))")
        XCTAssertFalse(o.records.contains { $0.school == "mallory" && $0.event == .schoolSelected })
    }
}

final class TaskBox: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Void, Error>?
    func set(_ t: Task<Void, Error>) { lock.withLock { task = t } }
    func cancel() { lock.withLock { task?.cancel() } }
}

final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _value = 0
    var value: Int {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (ObjectRef, WireToken)?
    func set(_ ref: ObjectRef, nonce: WireToken) { lock.withLock { value = (ref, nonce) } }
    func get() -> (ObjectRef, WireToken)? { lock.withLock { value } }
}

final class StartOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    private let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func fire() {
        let go = lock.withLock { () -> Bool in defer { done = true }; return !done }
        if go { body() }
    }
}

extension HostileUpdateTests {
    /// A school cannot flood the round driver with results (issue 17, item 6).
    func testMoreResultsThanAssignmentsCloseTheSession() async throws {
        let sent = PortBox()
        let closed = PortBox()
        let o = try await run(minSchools: 3, onConnect: { conn in
            let digest = ObjectDigest.of(Data([1]))
            for i in 1...1000 {
                do {
                    try await conn.send(.roundResult(RoundResult(round: 1, nonce: "00000000000000ff", status: .completed,
                                                                 update: ObjectRef(id: "update-r1", size: 1, sha256: digest),
                                                                 exampleCount: 5, metrics: [:])))
                    sent.value = i
                    try await Task.sleep(for: .milliseconds(2))
                } catch {
                    closed.value = 1
                    return
                }
            }
        }) { _, _, _, _ in }
        XCTAssertTrue(o.reports.first?.committed ?? false)
        XCTAssertFalse(o.reports.first?.accepted.contains("mallory") ?? true)
        XCTAssertEqual(closed.value, 1, "the coordinator never closed the flooding session (\(sent.value) results sent)")
        XCTAssertLessThan(sent.value, 1000)
        let recorded = o.records.filter { $0.school == "mallory" }
        // Selected, left out, and one note of the ignored results at most.
        XCTAssertLessThanOrEqual(recorded.count, 3, "a flood must not become a flood of audit records: \(recorded.map { $0.reason ?? "" })")
    }
}

extension HostileUpdateTests {
    /// Mallory claims 1,000,000 examples in the very first round and sends a large delta that
    /// the norm bound for a million examples would let through: its weight is capped (the first
    /// round uses `initial_median_examples`) and the bound follows the capped count, so it is out.
    func testOverstatedCountGetsNeitherTheWeightNorTheRoom() async throws {
        let o = try await run { a, conn, folder, n in
            _ = try await Self.send({ _ in 10 }, count: n, a, conn, folder, examples: 1_000_000)
        }
        assertHonestRoundCommits(o)
        XCTAssertFalse(o.reports.first?.accepted.contains("mallory") ?? true)
        XCTAssertTrue(o.reasons("mallory").contains { $0.contains("exceeds the bound") }, "\(o.reasons("mallory"))")
    }
}
