import Foundation
import Logging
import PandoData
import PandoEngine
import PandoCertificates
import PandoLedger
import PandoTestSupport
import PandoTraining
import XCTest
@testable import PandoServe

/// Tiny checkpoints as fine-tuned folders: the tiny random BERT's weights with a task head in
/// config.json (id2label, problem_type) and the made-up vocabulary (tok0 … tok93).
enum TinyCheckpoint {
    static func folder(_ fixture: String, labels: [String], problem: String) throws -> URL {
        let folder = try TestFixtures.tinyModelFolder()
        try FileManager.default.removeItem(at: folder.appendingPathComponent("model.safetensors"))
        try FileManager.default.copyItem(at: TestFixtures.url("tiny/\(fixture)/model.safetensors"), to: folder.appendingPathComponent("model.safetensors"))
        var config = try TestFixtures.json("tiny/\(fixture)/config.json")
        config["id2label"] = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ("\($0)", $1) })
        config["label2id"] = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        config["problem_type"] = problem
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
        return folder
    }

    /// Texts of 1 to 30 made-up words (some unknown), so batches mix lengths.
    static func texts(_ count: Int, seed: Int = 1) -> [String] {
        (0..<count).map { i in
            let n = 1 + (i * 7 + seed) % 30
            return (0..<n).map { j in (i + j) % 11 == 0 ? "unknownword" : "tok\((i * 31 + j * 17 + seed) % 94)" }.joined(separator: " ")
        }
    }
}

/// A server on an ephemeral loopback port, run on its own task; the tests drive it from their
/// own (non-async) thread with `RawHTTP`.
final class RunningServer {
    let server: InferenceServer
    let port: Int
    private let finished = DispatchSemaphore(value: 0)
    private let failure = LockedBox<Error?>(nil)

    init(model: ServedModel, logger: Logger = Logger(label: "serve-test", factory: { _ in SwiftLogNoOpLogHandler() }),
         configure: (inout ServeSettings) -> Void = { _ in }) throws {
        var settings = ServeSettings()
        settings.port = 0
        configure(&settings)
        server = try InferenceServer(model: model, settings: settings, logger: logger)
        let port = LockedBox(0)
        let ready = DispatchSemaphore(value: 0)
        let server = server, finished = finished, failure = failure
        Task.detached {
            do { try await server.run { port.value = $0; ready.signal() } } catch {
                failure.value = error
                ready.signal()
            }
            finished.signal()
        }
        guard ready.wait(timeout: .now() + 30) == .success, port.value > 0 else {
            throw ServeError("the server did not start: \(failure.value.map { "\($0)" } ?? "timeout")")
        }
        self.port = port.value
    }

    /// Graceful shutdown; true when `run` returned within `timeout`.
    func stop(timeout: TimeInterval = 30) -> Bool {
        let server = server
        Task.detached { await server.shutdown() }
        return finished.wait(timeout: .now() + timeout) == .success
    }

    func send(_ bytes: Data) -> HTTPAnswer? { RawHTTP.send(port: port, bytes) }
}

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ value: T) { _value = value }
    var value: T {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

final class InferenceServerTests: XCTestCase {
    static let labels = ["negative", "neutral", "positive"]

    func classifier(logs: LogCapture? = nil, _ configure: (inout ServeSettings) -> Void = { _ in }) throws -> (RunningServer, ServedModel) {
        let folder = try TinyCheckpoint.folder("softmax", labels: Self.labels, problem: "single_label_classification")
        let model = try ServedModel(reference: folder.path, store: nil, int8: false, maxBatchSequences: 64)
        let logger = logs?.logger("pando.serve") ?? Logger(label: "serve-test", factory: { _ in SwiftLogNoOpLogHandler() })
        return (try RunningServer(model: model, logger: logger, configure: configure), model)
    }

    /// Label → score of one answer list, checking it is sorted highest first.
    func scores(_ list: Any?, file: StaticString = #filePath, line: UInt = #line) -> [String: Double] {
        guard let entries = list as? [[String: Any]] else {
            XCTFail("not a list of {label, score}: \(String(describing: list))", file: file, line: line)
            return [:]
        }
        let values = entries.compactMap { $0["score"] as? Double }
        XCTAssertEqual(values, values.sorted(by: >), "sorted by score", file: file, line: line)
        return Dictionary(uniqueKeysWithValues: entries.map { ($0["label"] as! String, $0["score"] as! Double) })
    }

    func expected(_ model: ServedModel, _ texts: [String]) -> [[String: Double]] {
        model.checkpoint.predict(texts).map { p in
            Dictionary(uniqueKeysWithValues: zip(model.labels, p.probabilities!.map(Double.init)))
        }
    }

    func assertClose(_ a: [String: Double], _ b: [String: Double], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Set(a.keys), Set(b.keys), file: file, line: line)
        for (k, v) in a { XCTAssertEqual(v, b[k] ?? .nan, accuracy: 1e-5, "\(k)", file: file, line: line) }
    }

    func testPredictMatchesDirectInferenceAndModelDescribesItself() throws {
        let (running, model) = try classifier()
        defer { XCTAssertTrue(running.stop()) }
        let texts = TinyCheckpoint.texts(5)
        let many = try XCTUnwrap(running.send(RawHTTP.post("/predict", json: String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": texts]), as: UTF8.self))))
        XCTAssertEqual(many.status, 200, String(decoding: many.body, as: UTF8.self))
        let lists = try XCTUnwrap(many.json as? [Any])
        XCTAssertEqual(lists.count, 5)
        for (got, want) in zip(lists, expected(model, texts)) { assertClose(scores(got), want) }

        // One string: still one list per input; top_k keeps the best k.
        let one = try XCTUnwrap(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok3 tok4 tok5", "parameters": {"top_k": 2}}"#)))
        XCTAssertEqual(one.status, 200)
        let single = try XCTUnwrap((one.json as? [Any])?.first as? [[String: Any]])
        XCTAssertEqual(single.count, 2)
        let full = expected(model, ["tok3 tok4 tok5"])[0]
        XCTAssertEqual(single[0]["label"] as? String, full.max { $0.value < $1.value }?.key)

        let described = try XCTUnwrap(running.send(RawHTTP.request("GET", "/model", contentType: nil))?.json as? [String: Any])
        XCTAssertEqual(described["task"] as? String, "classification")
        XCTAssertEqual(described["labels"] as? [String], Self.labels)
        XCTAssertEqual(described["sha256"] as? String, try sha256(model.checkpoint.folder.appendingPathComponent("model.safetensors")))
        let health = try XCTUnwrap(running.send(RawHTTP.request("GET", "/healthz", contentType: nil)))
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual((health.json as? [String: String])?["status"], "ok")
    }

    func sha256(_ url: URL) throws -> String {
        let r = try Program.run("/usr/bin/sha256sum", [url.path])
        return String(String(decoding: r.output, as: UTF8.self).prefix(64))
    }

    func testEmbedMatchesTheEncodersPooledVectors() throws {
        let (running, model) = try classifier()
        defer { XCTAssertTrue(running.stop()) }
        let texts = TinyCheckpoint.texts(3, seed: 5)
        let answer = try XCTUnwrap(running.send(RawHTTP.post("/embed", json: String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": texts]), as: UTF8.self))))
        XCTAssertEqual(answer.status, 200)
        let vectors = try XCTUnwrap(answer.json as? [[Double]])
        let direct = BatchedInference(model: model.checkpoint.model, batchSize: 8, maxLength: model.maxLength)
            .embeddings(model.encode(texts), pooling: model.embeddingPooling, normalize: true)
        XCTAssertEqual(vectors.count, 3)
        for (v, d) in zip(vectors, direct) {
            XCTAssertEqual(v.count, model.checkpoint.model.config.hiddenSize)
            for (a, b) in zip(v, d) { XCTAssertEqual(a, Double(b), accuracy: 1e-5) }
            XCTAssertEqual(v.reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-4)
        }
        // /embed takes no parameters.
        XCTAssertEqual(running.send(RawHTTP.post("/embed", json: #"{"inputs": "a", "parameters": {"top_k": 1}}"#))?.status, 400)
    }

    func testMultiLabelAndRegressionAnswers() throws {
        let labels = ["algebra", "geometry", "reading", "writing", "science"]
        let ml = try ServedModel(reference: try TinyCheckpoint.folder("multilabel", labels: labels, problem: "multi_label_classification").path,
                                 store: nil, int8: false, maxBatchSequences: 16)
        XCTAssertEqual(ml.task, .multiLabel)
        let running = try RunningServer(model: ml)
        let texts = TinyCheckpoint.texts(4, seed: 3)
        let answer = try XCTUnwrap(running.send(RawHTTP.post("/predict", json: String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": texts]), as: UTF8.self))))
        XCTAssertEqual(answer.status, 200)
        let lists = try XCTUnwrap(answer.json as? [[[String: Any]]])
        for (list, p) in zip(lists, ml.checkpoint.predict(texts)) {
            XCTAssertEqual(list.count, labels.count)
            let got = scores(list)
            for (label, prob) in zip(labels, p.probabilities!) { XCTAssertEqual(got[label] ?? .nan, Double(prob), accuracy: 1e-5) }
            // "predicted" marks exactly the labels at or above their thresholds.
            XCTAssertEqual(Set(list.filter { $0["predicted"] as? Bool == true }.map { $0["label"] as! String }), Set(p.labels!))
        }
        XCTAssertTrue(running.stop())

        let reg = try ServedModel(reference: try TinyCheckpoint.folder("regression", labels: ["score"], problem: "regression").path,
                                  store: nil, int8: false, maxBatchSequences: 16)
        XCTAssertEqual(reg.task, .regression)
        let r = try RunningServer(model: reg)
        defer { XCTAssertTrue(r.stop()) }
        let value = try XCTUnwrap(r.send(RawHTTP.post("/predict", json: #"{"inputs": ["tok1 tok2", "tok9"]}"#))?.json as? [[[String: Any]]])
        let direct = reg.checkpoint.predict(["tok1 tok2", "tok9"])
        XCTAssertEqual(value.map(\.count), [1, 1])
        for (list, p) in zip(value, direct) {
            XCTAssertEqual(list[0]["label"] as? String, "score")
            XCTAssertEqual(list[0]["score"] as? Double ?? .nan, Double(p.score!), accuracy: 1e-5)
        }
    }

    /// An ordinal head (CORAL: K − 1 threshold logits for K levels): the level probabilities,
    /// highest first, and "predicted" on the level the thresholds give.
    /// A body trickled in (or never finished) gets 408 at the body deadline, not a connection held
    /// for as long as the client likes; the server answers others meanwhile and afterwards.
    func testASlowBodyTimesOut() throws {
        let (running, _) = try classifier { $0.bodyTimeout = .milliseconds(300) }
        defer { XCTAssertTrue(running.stop()) }
        let start = Date()
        let partial = RawHTTP.request("POST", "/predict", contentType: "application/json", headers: ["Content-Length": "40"]) + Data(#"{"inputs": "#.utf8)
        let answer = try XCTUnwrap(running.send(partial))
        XCTAssertEqual(answer.status, 408)
        XCTAssertTrue(answer.error?.contains("body: not received within") ?? false, answer.error ?? "")
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        XCTAssertEqual(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok1"}"#))?.status, 200)
    }

    func testOrdinalAnswers() throws {
        let levels = ["grade 1", "grade 2", "grade 3", "grade 4"]
        let folder = try TinyCheckpoint.folder("softmax", labels: levels, problem: "single_label_classification")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("config.json"))) as! [String: Any]
        config["pando_objective"] = "ordinal"
        config.removeValue(forKey: "problem_type")
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
        let model = try ServedModel(reference: folder.path, store: nil, int8: false, maxBatchSequences: 8)
        XCTAssertEqual(model.task, .ordinal)
        let running = try RunningServer(model: model)
        defer { XCTAssertTrue(running.stop()) }
        let texts = TinyCheckpoint.texts(6, seed: 2)
        let lists = try XCTUnwrap(running.send(RawHTTP.post("/predict", json: String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": texts]), as: UTF8.self)))?.json as? [[[String: Any]]])
        XCTAssertEqual(lists.count, texts.count)
        for (list, p) in zip(lists, model.checkpoint.predict(texts)) {
            let got = scores(list)
            for (level, prob) in zip(levels, p.probabilities!) { XCTAssertEqual(got[level] ?? .nan, Double(prob), accuracy: 1e-5) }
            XCTAssertEqual(list.filter { $0["predicted"] as? Bool == true }.map { $0["label"] as! String }, [p.label!])
            XCTAssertEqual(list.filter { $0["predicted"] as? Bool == false }.count, levels.count - 1)
        }
    }

    func testHostileRequestsGetJSONErrorsNamingTheProblem() throws {
        let logs = LogCapture()
        let (running, _) = try classifier(logs: logs) { $0.limits = ServeLimits(maxBodyBytes: 64 << 10, maxInputs: 8, maxTextBytes: 2000) }
        defer {
            XCTAssertTrue(running.stop())
            // The access log: a line per request with status and input count, and never a text or a body.
            XCTAssertTrue(logs.contains("POST /predict 400"), logs.lines.joined(separator: "\n"))
            XCTAssertTrue(logs.contains("POST /predict 200"))
            XCTAssertTrue(logs.contains("inputs=1"))
            for planted in ["tok1", "unterminated", "hello", "fine"] {
                XCTAssertFalse(logs.contains(planted), "'\(planted)' reached the log")
            }
        }
        func check(_ request: Data, _ status: Int, _ mentions: String, line: UInt = #line) {
            guard let answer = running.send(request) else { return XCTFail("no answer", line: line) }
            XCTAssertEqual(answer.status, status, String(decoding: answer.body.prefix(300), as: UTF8.self), line: line)
            XCTAssertEqual(answer.headers["content-type"], "application/json", line: line)
            XCTAssertTrue(answer.error?.contains(mentions) ?? false, "\(answer.error ?? "no error field") should mention \(mentions)", line: line)
        }
        check(RawHTTP.post("/predict", json: #"{"inputs": "unterminated"#), 400, "body: not valid JSON")
        check(RawHTTP.post("/predict", json: ""), 400, "body: empty")
        check(RawHTTP.post("/predict", json: #"["a", "b"]"#), 400, "body: expected a JSON object")
        check(RawHTTP.post("/predict", json: #"{"text": "hello"}"#), 400, "text: unknown field")
        check(RawHTTP.post("/predict", json: #"{"inputs": 5}"#), 400, "inputs: expected a string or an array of strings")
        check(RawHTTP.post("/predict", json: #"{"inputs": ["fine", {"x": 1}]}"#), 400, "inputs[1]: expected a string")
        check(RawHTTP.post("/predict", json: #"{"inputs": []}"#), 400, "inputs: empty")
        check(RawHTTP.post("/predict", json: #"{}"#), 400, "inputs: missing")
        check(RawHTTP.post("/predict", json: #"{"inputs": "a", "parameters": {"top_k": 0}}"#), 400, "parameters.top_k")
        check(RawHTTP.post("/predict", json: #"{"inputs": "a", "parameters": {"top_k": true}}"#), 400, "parameters.top_k")
        check(RawHTTP.post("/predict", json: #"{"inputs": "a", "parameters": {"temperature": 2}}"#), 400, "parameters.temperature")
        // Invalid UTF-8 and 100 000 nested arrays (a parser's stack) within the body limit.
        check(RawHTTP.request("POST", "/predict", body: Data(#"{"inputs": ""#.utf8) + Data([0xff, 0xfe]) + Data(#""}"#.utf8)), 400, "body: not valid JSON")
        check(RawHTTP.post("/predict", json: #"{"inputs": "# + String(repeating: "[", count: 30_000) + String(repeating: "]", count: 30_000) + "}"),
              400, "body")
        // Too many inputs, a text too long, a body too large (declared, and streamed chunked).
        check(RawHTTP.post("/predict", json: String(decoding: try JSONSerialization.data(withJSONObject: ["inputs": Array(repeating: "tok1", count: 9)]), as: UTF8.self)),
              413, "inputs: 9 texts; at most 8")
        check(RawHTTP.post("/predict", json: #"{"inputs": ["ok", ""# + String(repeating: "tok1 ", count: 500) + #""]}"#), 413, "inputs[1]: 2500 bytes")
        check(RawHTTP.request("POST", "/predict", contentType: "application/json", headers: ["Content-Length": "50000000"]), 413, "body: 50000000 bytes")
        var chunked = Data("POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        let chunk = Data(String(repeating: " ", count: 16 << 10).utf8)
        for _ in 0..<8 { chunked += Data("4000\r\n".utf8) + chunk + Data("\r\n".utf8) }
        chunked += Data("0\r\n\r\n".utf8)
        if let answer = running.send(chunked) {  // or the server closed the connection while the client still sent
            XCTAssertEqual(answer.status, 413)
        }
        // Wrong content, method, path; a request line the HTTP parser rejects.
        check(RawHTTP.request("POST", "/predict", body: Data("inputs=hello".utf8), contentType: "application/x-www-form-urlencoded"), 415, "Content-Type")
        check(RawHTTP.request("GET", "/predict", contentType: nil), 405, "/predict takes POST")
        check(RawHTTP.request("GET", "/admin", contentType: nil), 404, "no such endpoint")
        _ = running.send(Data("\u{01}\u{02} garbage\r\n\r\n".utf8))
        // Still up and answering.
        XCTAssertEqual(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok1"}"#))?.status, 200)
    }

    func testAThousandConcurrentRequestsAreAnsweredCorrectlyOr503() throws {
        // A small queue, so some of the thousand find it full.
        let (running, model) = try classifier {
            $0.batching = InferenceQueue.Limits(maxBatchSequences: 32, maxBatchTokens: 4096, maxWait: 0.002, capacity: 48)
            $0.maxConnections = 128  // most of the thousand wait in the listen backlog
        }
        defer { XCTAssertTrue(running.stop()) }
        let pool = TinyCheckpoint.texts(40, seed: 9)
        let want = expected(model, pool)
        let requests: [[Int]] = (0..<1000).map { i in (0..<(1 + i % 3)).map { (i * 13 + $0 * 7) % pool.count } }
        let bodies = try requests.map { indices in
            RawHTTP.request("POST", "/predict", body: try JSONSerialization.data(withJSONObject: ["inputs": indices.map { pool[$0] }]))
        }
        let answers = RawHTTP.exchange(port: running.port, bodies, timeout: 180)
        var ok = 0, busy = 0
        for (i, answer) in answers.enumerated() {
            guard let answer else { XCTFail("request \(i): no answer"); continue }
            switch answer.status {
            case 200:
                ok += 1
                let lists = answer.json as? [Any] ?? []
                XCTAssertEqual(lists.count, requests[i].count, "request \(i)")
                for (list, index) in zip(lists, requests[i]) { assertClose(scores(list), want[index]) }
            case 503:
                busy += 1
                XCTAssertEqual(answer.headers["retry-after"], "1", "request \(i)")
            default:
                XCTFail("request \(i): status \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
            }
        }
        XCTAssertEqual(ok + busy, 1000)
        XCTAssertGreaterThan(ok, 0)
        let stats = running.server.queue.statistics
        XCTAssertGreaterThan(stats.largest, 3, "concurrent requests were batched together (largest batch \(stats.largest) sequences)")
        print("1000 concurrent requests: \(ok) answered, \(busy) got 503; \(stats.batches) batches, largest \(stats.largest) sequences")
        XCTAssertEqual(running.send(RawHTTP.request("GET", "/healthz", contentType: nil))?.status, 200)
        XCTAssertEqual(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok1"}"#))?.status, 200)
    }

    func testShutdownAnswersTheRequestsInFlight() throws {
        // A long batching window: the requests are queued, waiting for the worker, when the shutdown comes.
        let (running, _) = try classifier { $0.batching = InferenceQueue.Limits(maxBatchSequences: 64, maxWait: 0.5, capacity: 64) }
        let answers = LockedBox<[HTTPAnswer?]>([])
        let done = DispatchSemaphore(value: 0)
        let port = running.port
        Thread.detachNewThread {
            answers.value = RawHTTP.exchange(port: port, (0..<5).map { _ in RawHTTP.post("/predict", json: #"{"inputs": "tok1 tok2"}"#) })
            done.signal()
        }
        let start = Date()
        while running.server.queue.waiting < 5, Date().timeIntervalSince(start) < 30 { usleep(1000) }
        XCTAssertEqual(running.server.queue.waiting, 5)
        XCTAssertTrue(running.stop(), "the server drained and stopped")
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(answers.value.map { $0?.status }, Array(repeating: 200, count: 5))
        // It no longer listens.
        XCTAssertNil(RawHTTP.send(port: port, RawHTTP.request("GET", "/healthz", contentType: nil), timeout: 5))
    }

    /// A version of a coordinator's checkpoint store, by tag and by `head`: /model names it, and
    /// weights that no longer match the version's id are refused at start.
    func testServesAVersionOfACheckpointStoreAndRefusesCorruptWeights() throws {
        let folder = try TinyCheckpoint.folder("softmax", labels: Self.labels, problem: "single_label_classification")
        let store = try TestFixtures.temporaryDirectory().appendingPathComponent("state")
        let ledger = try CoordinatorLedger(folder: store)
        let base = try ledger.createFederation(id: "f", name: "f", task: "classification", base: try ledger.store.stage(copyingFolder: folder))
        try ledger.tag("head", as: "approved")
        ledger.close()
        let served = try ServedModel(reference: "approved", store: store, int8: false, maxBatchSequences: 8)
        XCTAssertEqual(served.version, base.id)
        XCTAssertEqual(served.weightsSHA256, base.id)
        let running = try RunningServer(model: served)
        let described = try XCTUnwrap(running.send(RawHTTP.request("GET", "/model", contentType: nil))?.json as? [String: Any])
        XCTAssertEqual(described["version"] as? String, base.id)
        XCTAssertEqual(described["sha256"] as? String, base.id)
        let answer = try XCTUnwrap(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok7 tok8"}"#))?.json as? [Any])
        assertClose(scores(answer.first), expected(served, ["tok7 tok8"])[0])
        XCTAssertTrue(running.stop())

        let weights = store.appendingPathComponent("versions/\(base.id)/model.safetensors")
        let handle = try FileHandle(forWritingTo: weights)
        try handle.seek(toOffset: try handle.seekToEnd() - 4)
        handle.write(Data([1, 2, 3, 4]))
        try handle.close()
        XCTAssertThrowsError(try ServedModel(reference: "head", store: store, int8: false, maxBatchSequences: 8)) {
            XCTAssertTrue("\($0)".contains("do not match their id"), "\($0)")
        }
        XCTAssertThrowsError(try ServedModel(reference: "no-such-tag", store: store, int8: false, maxBatchSequences: 8))
        XCTAssertThrowsError(try ServedModel(reference: store.appendingPathComponent("missing").path, store: nil, int8: false, maxBatchSequences: 8)) {
            XCTAssertTrue("\($0)".contains("--store"), "\($0)")
        }
    }

    /// Over TLS (curl as the client): the district-style certificate is served, a POST is
    /// answered, and plain HTTP to the TLS port gets nothing; with TLS any address validates.
    func testTLS() throws {
        let curl = try Program.require("curl", package: "curl")
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-serve-tls")
        let ca = try CertificateAuthority.initialise(at: work.appendingPathComponent("ca"), districtName: "Serve test")
        try ca.issueCoordinator(hosts: ["127.0.0.1"])
        let certs = CertificateAuthority.coordinatorDirectory(work.appendingPathComponent("ca"))
        var settings = ServeSettings()
        settings.host = "0.0.0.0"
        settings.certificate = certs.appendingPathComponent("coordinator.pem")
        settings.privateKey = certs.appendingPathComponent("coordinator-key.pem")
        XCTAssertNoThrow(try settings.validate())
        let (running, model) = try classifier {
            $0.certificate = settings.certificate
            $0.privateKey = settings.privateKey
        }
        defer { XCTAssertTrue(running.stop()) }
        let r = try Program.run(curl, ["-s", "--max-time", "20", "--cacert", work.appendingPathComponent("ca/ca.pem").path,
                                       "-H", "Content-Type: application/json", "-d", #"{"inputs": "tok5 tok6"}"#,
                                       "https://127.0.0.1:\(running.port)/predict"])
        XCTAssertEqual(r.status, 0, r.errors)
        let lists = try XCTUnwrap(try JSONSerialization.jsonObject(with: r.output) as? [Any])
        assertClose(scores(lists.first), expected(model, ["tok5 tok6"])[0])
        XCTAssertNil(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok5"}"#)), "plain HTTP to the TLS port")
    }

    func testOffLoopbackNeedsTLSAndATokenIsChecked() throws {
        var settings = ServeSettings()
        settings.host = "0.0.0.0"
        XCTAssertThrowsError(try settings.validate()) { XCTAssertTrue("\($0)".contains("needs TLS"), "\($0)") }
        let dir = try TestFixtures.temporaryDirectory()
        let token = dir.appendingPathComponent("token")
        try "0123456789abcdef-secret".write(to: token, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: token.path)
        XCTAssertThrowsError(try classifier { $0.tokenFile = token }) { XCTAssertTrue("\($0)".contains("chmod 600"), "\($0)") }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: token.path)
        let (running, _) = try classifier { $0.tokenFile = token }
        defer { XCTAssertTrue(running.stop()) }
        XCTAssertEqual(running.send(RawHTTP.post("/predict", json: #"{"inputs": "tok1"}"#))?.status, 401)
        XCTAssertEqual(running.send(RawHTTP.request("POST", "/predict", body: Data(#"{"inputs": "tok1"}"#.utf8),
                                                    headers: ["Authorization": "Bearer wrong-token-wrong"]))?.status, 401)
        XCTAssertEqual(running.send(RawHTTP.request("POST", "/predict", body: Data(#"{"inputs": "tok1"}"#.utf8),
                                                    headers: ["Authorization": "Bearer 0123456789abcdef-secret"]))?.status, 200)
        XCTAssertEqual(running.send(RawHTTP.request("GET", "/healthz", contentType: nil))?.status, 200, "health checks need no token")
    }
}

final class InferenceQueueTests: XCTestCase {
    /// The worker blocked on a first batch: jobs wait, the queue refuses beyond its capacity,
    /// and once released the waiting jobs run as one batch.
    func testBoundedQueueRefusesWhenFullAndBatchesWhatWaited() async throws {
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let first = LockedBox(true)
        let queue = InferenceQueue(limits: .init(maxBatchSequences: 16, maxBatchTokens: 1000, maxWait: 0, capacity: 6)) { _, sequences in
            if first.value {
                first.value = false
                entered.signal()
                release.wait()
            }
            return sequences.map { [Float($0[0])] }
        }
        queue.start()
        let a = Task { try await queue.submit(.logits, [[100]]) }
        XCTAssertEqual(entered.wait(timeout: .now() + 10), .success)
        var waiting: [Task<[[Float]], Error>] = []
        for i in 0..<3 { waiting.append(Task { try await queue.submit(.logits, [[Int32(2 * i)], [Int32(2 * i + 1)]]) }) }
        while queue.waiting < 6 { try await Task.sleep(for: .milliseconds(1)) }
        do {
            _ = try await queue.submit(.logits, [[7]])
            XCTFail("a full queue must refuse")
        } catch let e as InferenceQueue.QueueError {
            XCTAssertEqual(e, .full)
        }
        release.signal()
        let firstAnswer = try await a.value
        XCTAssertEqual(firstAnswer, [[100]])
        for (i, t) in waiting.enumerated() {
            let answer = try await t.value
            XCTAssertEqual(answer, [[Float(2 * i)], [Float(2 * i + 1)]], "each job gets its own outputs, in order")
        }
        XCTAssertEqual(queue.statistics.batches, 2)
        XCTAssertEqual(queue.statistics.largest, 6)
        queue.stop()
        do {
            _ = try await queue.submit(.logits, [[1]])
            XCTFail("a stopped queue refuses")
        } catch let e as InferenceQueue.QueueError {
            XCTAssertEqual(e, .stopped)
        }
    }
}
