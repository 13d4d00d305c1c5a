import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import PandoData
import PandoServices
import PandoStatus
import PandoTestSupport
import XCTest

/// A tiny-model loopback federation that keeps running (rounds up to `maxRounds`) with a
/// status listener on an ephemeral loopback port, for the status tests.
final class RunningFederation: @unchecked Sendable {
    let federation: LoopbackFederation
    let status: StatusServer
    let work: URL
    private var runTask: Task<[FederatedRoundReport], Error>?
    private var statusTask: Task<Void, Error>?
    private let rounds = AsyncStream.makeStream(of: Int.self)
    private(set) var port = 0
    static let labels = ["a", "b"]
    /// Training and validation sizes of the three schools.
    static let schools: [(id: String, training: Int, validation: Int)] = [("north", 60, 20), ("south", 90, 20), ("west", 40, 20)]

    init(maxRounds: Int = 50) throws {
        work = try TestFixtures.temporaryDirectory(prefix: "pando-status")
        let model = try TestFixtures.tinyModelFolder()
        let state = work.appendingPathComponent("state")
        var c = CoordinatorConfiguration(federationID: "status-federation", task: .classification, labels: Self.labels, baseModel: model,
                                         stateFolder: state, certificate: state, privateKey: state, caCertificate: state, revocationList: state)
        c.rounds.rounds = maxRounds
        c.rounds.minSchools = 3
        c.rounds.quorum = 2
        c.rounds.roundDeadline = .seconds(120)
        c.rounds.waitForSchools = .seconds(60)
        c.rounds.evaluationDeadline = .seconds(60)
        c.plan.epochs = 1
        c.plan.learningRate = 1e-3
        c.plan.batchSize = 16
        c.plan.maxLength = 24
        c.plan.dropout = false
        let map = try LabelMap(names: Self.labels)
        func dataset(_ rows: [(text: String, label: String)]) -> LabeledDataset {
            LabeledDataset(task: .classification, labels: map,
                           examples: rows.enumerated().map { Example(text: $1.text, target: .classIndex(map.index(of: $1.label)!), line: $0 + 2) })
        }
        let schools = Self.schools.enumerated().map { i, s in
            LoopbackFederation.School(id: s.id, training: dataset(synthetic(count: s.training, seed: UInt64(100 + i))),
                                      validation: dataset(synthetic(count: s.validation, seed: UInt64(200 + i))))
        }
        let quiet = Logger(label: "status-test", factory: { _ in SwiftLogNoOpLogHandler() })
        federation = try LoopbackFederation(configuration: c, schools: schools, workFolder: work.appendingPathComponent("run"),
                                            schoolLogFolder: state.appendingPathComponent("schools"), logger: quiet)
        // Heartbeats every 200 ms, so the schools' reported activity reaches the page within a round.
        federation.coordinator.transport.heartbeatInterval = .milliseconds(200)
        status = try StatusServer(settings: StatusSettings(host: "127.0.0.1", port: 0), configuration: federation.coordinator.configuration,
                                  monitor: federation.coordinator.monitor, logger: quiet)
        let roundsContinuation = rounds.continuation
        federation.coordinator.onRound = { roundsContinuation.yield($0.round) }
    }

    /// Starts the status listener and the federation; returns once `rounds` rounds have ended.
    func start(untilRounds wanted: Int) async throws {
        let ports = AsyncStream.makeStream(of: Int.self)
        let status = self.status
        statusTask = Task { try await status.run(onListening: { ports.continuation.yield($0); ports.continuation.finish() }) }
        var it = ports.stream.makeAsyncIterator()
        let next = await it.next()
        port = try XCTUnwrap(next, "the status listener did not start")
        let federation = self.federation
        runTask = Task { try await federation.run() }
        var ended = 0
        for await _ in rounds.stream {
            ended += 1
            if ended >= wanted { break }
        }
    }

    /// Stops the federation (the open round is aborted) and the listener.
    func stop() async {
        federation.coordinator.shutdown(reason: "status test done")
        _ = await runTask?.result
        statusTask?.cancel()
        _ = await statusTask?.result
        try? FileManager.default.removeItem(at: work)
    }

    var base: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// The configuration of a coordinator that never opens its state: a listener on its
    /// monitor serves an empty federation.
    static let unopened: CoordinatorConfiguration = {
        let nowhere = URL(fileURLWithPath: "/nonexistent")
        return CoordinatorConfiguration(federationID: "fed", task: .classification, labels: ["a", "b"], baseModel: nowhere,
                                        stateFolder: nowhere, certificate: nowhere, privateKey: nowhere, caCertificate: nowhere,
                                        revocationList: nowhere)
    }()
}

/// HTTP on loopback: (status, headers, body).
enum HTTP {
    static func get(_ url: URL, headers: [String: String] = [:], method: String = "GET", body: Data? = nil) async throws
        -> (status: Int, headers: [String: String], body: Data) {
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.httpBody = body
        request.timeoutInterval = 60
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = try XCTUnwrap(response as? HTTPURLResponse)
        var fields: [String: String] = [:]
        for (k, v) in http.allHeaderFields { fields["\(k)".lowercased()] = "\(v)" }
        return (http.statusCode, fields, data)
    }
}

/// Raw HTTP/1.1 over a TCP socket, for requests URLSession will not send (a GET with a body,
/// oversized headers, garbage): the bytes go out as given (send `Connection: close`), and the
/// answer is read until the server closes or `limit` bytes (at most 10 s per read).
enum RawHTTP {
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { close(fd); throw Program.Missing(description: "cannot connect to 127.0.0.1:\(port)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// The status code of the first response line, or nil when the server closed without one.
    static func status(port: Int, request: [UInt8], limit: Int = 1 << 16) throws -> (code: Int?, response: String) {
        let fd = try connect(port: port)
        defer { close(fd) }
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the server may close early on a refused request
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < limit {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received += buffer[0..<n]
        }
        let text = String(decoding: received, as: UTF8.self)
        let code = text.hasPrefix("HTTP/1.1 ") ? Int(text.dropFirst(9).prefix(3)) : nil
        return (code, text)
    }
}
