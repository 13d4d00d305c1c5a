import Foundation
import Logging
import NIOCore
import PandoCertificates
import PandoLedger
import PandoServices
@testable import PandoStatus
import PandoTestSupport
import XCTest

/// The listener against clients that misbehave or lack the credential, and the page's escaping.
final class StatusListenerTests: XCTestCase {
    let quiet = Logger(label: "status-test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A listener over a coordinator that has not opened its state yet; returns its base URL and the task.
    func start(_ settings: StatusSettings) async throws -> (URL, Task<Void, Error>) {
        let server = try StatusServer(settings: settings, configuration: RunningFederation.unopened, monitor: CoordinatorMonitor(), logger: quiet)
        let ports = AsyncStream.makeStream(of: Int.self)
        let task = Task { try await server.run(onListening: { ports.continuation.yield($0); ports.continuation.finish() }) }
        var it = ports.stream.makeAsyncIterator()
        let next = await it.next()
        let port = try XCTUnwrap(next, "the status listener did not start")
        return (URL(string: "http://127.0.0.1:\(port)")!, task)
    }

    func testBearerTokenIsRequiredAndComparedWhole() async throws {
        let folder = try TestFixtures.temporaryDirectory(prefix: "pando-status-token")
        defer { try? FileManager.default.removeItem(at: folder) }
        let tokenFile = folder.appendingPathComponent("token")
        let token = "s3cret-token-0123456789abcdef"
        try Data("\(token)\n".utf8).write(to: tokenFile)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: tokenFile.path)
        var settings = StatusSettings(host: "127.0.0.1", port: 0)
        settings.tokenFile = tokenFile
        XCTAssertThrowsError(try StatusServer(settings: settings, configuration: RunningFederation.unopened, monitor: CoordinatorMonitor(), logger: quiet)) {
            XCTAssertTrue("\($0)".contains("status.token_file") && "\($0)".contains("644"), "\($0)")
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: tokenFile.path)
        let (base, task) = try await start(settings)
        defer { task.cancel() }
        let url = base.appendingPathComponent("api/v1/status")
        let none = try await HTTP.get(url)
        XCTAssertEqual(none.status, 401)
        XCTAssertEqual(none.headers["www-authenticate"], #"Bearer realm="pando-status""#)
        XCTAssertFalse(String(decoding: none.body, as: UTF8.self).contains(token))
        for wrong in ["Bearer " + token.dropLast(), "Bearer \(token)x", "Basic \(token)", token, "Bearer "] {
            let r = try await HTTP.get(url, headers: ["Authorization": String(wrong)])
            XCTAssertEqual(r.status, 401, wrong)
        }
        let right = try await HTTP.get(url, headers: ["Authorization": "Bearer \(token)"])
        XCTAssertEqual(right.status, 200)
        let metrics = try await HTTP.get(base.appendingPathComponent("metrics"))
        XCTAssertEqual(metrics.status, 401, "/metrics needs the token too")
    }

    func testMisbehavingClientsGetErrorsAndTheListenerStaysUp() async throws {
        let (base, task) = try await start(StatusSettings(host: "127.0.0.1", port: 0))
        defer { task.cancel() }
        let schema = try OpenAPISchema.load()
        let port = try XCTUnwrap(base.port)
        func body(of response: String) -> Data { Data((response.components(separatedBy: "\r\n\r\n").dropFirst().first ?? "").utf8) }
        let post = try RawHTTP.status(port: port, request: Array("POST /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 16\r\n\r\n0123456789abcdef".utf8))
        XCTAssertEqual(post.code, 405, post.response)
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(body(of: post.response)), against: schema.response("Error")), [])
        let withBody = try RawHTTP.status(port: port, request: Array("GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4096\r\n\r\n".utf8)
                                                                     + [UInt8](repeating: 65, count: 4096))
        XCTAssertEqual(withBody.code, 413, withBody.response)
        let chunked = try RawHTTP.status(port: port, request: Array("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n".utf8))
        XCTAssertEqual(chunked.code, 413, chunked.response)
        // Headers over the limit, and bytes that are not HTTP: refused or closed, never served.
        let huge = try RawHTTP.status(port: port, request: Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: \(String(repeating: "x", count: 64 << 10))\r\n\r\n".utf8))
        XCTAssertNotEqual(huge.code, 200, huge.response)
        let garbage = try RawHTTP.status(port: port, request: [0, 1, 2, 255, 13, 10, 13, 10] + Array("NOT HTTP AT ALL\r\n\r\n".utf8))
        XCTAssertNotEqual(garbage.code, 200, garbage.response)
        // A client that opens connections and sends half a request holds them; others are still served.
        var stalled: [Int32] = []
        for _ in 0..<20 {
            let fd = try RawHTTP.connect(port: port)
            _ = "GET / HTTP/1.1\r\nHost: x\r\n".withCString { write(fd, $0, strlen($0)) }
            stalled.append(fd)
        }
        defer { stalled.forEach { close($0) } }
        // Many at once: every one answered.
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<200 {
                group.addTask { try await HTTP.get(base.appendingPathComponent(i % 2 == 0 ? "api/v1/status" : "metrics")).status }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        XCTAssertEqual(statuses.count, 200)
        XCTAssertEqual(Set(statuses), [200])
        let empty = try await HTTP.get(base.appendingPathComponent("api/v1/status"))
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(empty.body), against: schema.schema("StatusDocument")), [],
                       "a coordinator that has not opened its state yet still answers by the schema")
        let health = try await HTTP.get(base.appendingPathComponent("healthz"))
        XCTAssertEqual(health.status, 200)
        let unknown = try await HTTP.get(base.appendingPathComponent("no/such/page"))
        XCTAssertEqual(unknown.status, 404)
    }

    /// Identifiers are escaped wherever the page puts them; nothing a school or a state folder
    /// names can open a tag or an attribute.
    func testPageEscapesEveryIdentifier() throws {
        let hostile = #"<script>alert("x")</script>'&"#
        let round = RoundHistory(round: 1, outcome: .committed, baseVersion: hostile, version: hostile, selected: 1, accepted: 1, examples: 3,
                                 trainLoss: 0.5, bytesUp: 1, bytesDown: 1, seconds: 1, stageSeconds: [hostile: 1], evaluation: ["accuracy": 0.5, hostile: 1],
                                 evaluationExamples: 3, schools: [SchoolRound(school: hostile, selected: true, accepted: true, leftOut: hostile)])
        let document = StatusDocument(
            generatedAt: hostile,
            federation: .init(id: hostile, task: hostile, labels: [hostile], createdAt: hostile, headVersion: hostile, port: 1, roundsPlanned: 1),
            schools: [.init(id: hostile, connected: true, lastSeen: hostile, activity: hostile, progress: 0.5, heartbeats: 1, roundsSelected: 1,
                            roundsAccepted: 1, roundsEvaluated: 0, leftOut: [hostile: 1])],
            round: .init(round: 2, stage: hostile, startedAt: hostile, stageSeconds: 1, selected: [hostile], accepted: 0, leftOut: [hostile: hostile]),
            rounds: [round],
            versions: [.init(id: hostile, sequence: 1, parent: hostile, round: 1, createdAt: hostile, head: true, pruned: false, metrics: [hostile: 1])],
            audit: .init(records: 1, lastHash: hostile))
        let html = StatusPage.render(document)
        XCTAssertFalse(html.contains("<script"), "a tag opened")
        XCTAssertFalse(html.contains(#"alert("x")"#), "a quote left as is")
        XCTAssertTrue(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;&amp;"))
        XCTAssertFalse(document.plottedMetrics.contains(hostile), "only identifier-like metric names are plotted")
    }
}

/// The schema checker the JSON tests rely on finds what breaks the document.
final class OpenAPISchemaTests: XCTestCase {
    func testCheckerFindsViolations() throws {
        let schema = try OpenAPISchema.load()
        let audit = try schema.schema("Audit")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"records":3,"lastHash":"\#(String(repeating: "a", count: 64))"}"#.utf8)), against: audit), [])
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"lastHash":"ab"}"#.utf8)), against: audit).count, 2, "missing records, bad hash")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"records":"3"}"#.utf8)), against: audit).count, 1, "a string is no integer")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"records":-1}"#.utf8)), against: audit).count, 1, "below the minimum")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"records":1,"text":"x"}"#.utf8)), against: audit).count, 1, "no extra fields")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"records":1.5}"#.utf8)), against: audit).count, 1)
        let round = try schema.schema("SchoolRound")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(Data(#"{"school":"a","selected":1,"accepted":true,"trainingMetrics":{"x":"y"},"evaluationMetrics":{},"leftOut":"bored"}"#.utf8)),
                                           against: round).count, 3, "a number for a boolean, text for a metric, an unknown reason code")
    }
}

/// The listener over TLS (curl as the client): admin client certificates of the configured
/// CA only, and the bearer token over TLS.
final class StatusTLSTests: XCTestCase {
    let quiet = Logger(label: "status-test", factory: { _ in SwiftLogNoOpLogHandler() })

    func testClientCertificatesOfTheConfiguredCAOnly() async throws {
        let curl = try Program.require("curl", package: "curl")
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-status-tls")
        defer { try? FileManager.default.removeItem(at: work) }
        // The status listener's certificate and the admins' CA; another CA whose certificates must not get in.
        let admins = try CertificateAuthority.initialise(at: work.appendingPathComponent("admins"), districtName: "Status admins")
        try admins.issueCoordinator(hosts: ["127.0.0.1"])
        try admins.issueSchool(id: "admin-1")
        let other = try CertificateAuthority.initialise(at: work.appendingPathComponent("other"), districtName: "Some district")
        try other.issueSchool(id: "admin-1")
        let server = CertificateAuthority.coordinatorDirectory(work.appendingPathComponent("admins"))
        let tokenFile = work.appendingPathComponent("token")
        try Data("tls-token-0123456789abcdef".utf8).write(to: tokenFile)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: tokenFile.path)

        func serve(_ configure: (inout StatusSettings) -> Void) async throws -> (Int, Task<Void, Error>) {
            var settings = StatusSettings(host: "127.0.0.1", port: 0)
            settings.certificate = server.appendingPathComponent("coordinator.pem")
            settings.privateKey = server.appendingPathComponent("coordinator-key.pem")
            configure(&settings)
            let status = try StatusServer(settings: settings, configuration: RunningFederation.unopened, monitor: CoordinatorMonitor(), logger: quiet)
            let ports = AsyncStream.makeStream(of: Int.self)
            let task = Task { try await status.run(onListening: { ports.continuation.yield($0); ports.continuation.finish() }) }
            var it = ports.stream.makeAsyncIterator()
            let next = await it.next()
            return (try XCTUnwrap(next), task)
        }
        let ca = work.appendingPathComponent("admins/ca.pem").path
        func get(_ port: Int, _ extra: [String]) throws -> (exit: Int32, code: String) {
            let r = try Program.run(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert", ca] + extra
                                    + ["https://127.0.0.1:\(port)/api/v1/status"])
            return (r.status, String(decoding: r.output, as: UTF8.self))
        }
        let (port, task) = try await serve { $0.clientCA = URL(fileURLWithPath: ca) }
        defer { task.cancel() }
        let admin = CertificateAuthority.schoolDirectory(work.appendingPathComponent("admins"), id: "admin-1")
        let stranger = CertificateAuthority.schoolDirectory(work.appendingPathComponent("other"), id: "admin-1")
        XCTAssertNotEqual(try get(port, []).exit, 0, "no client certificate: the handshake fails")
        XCTAssertNotEqual(try get(port, ["--cert", stranger.appendingPathComponent("school.pem").path,
                                         "--key", stranger.appendingPathComponent("school-key.pem").path]).exit, 0, "another CA's certificate")
        let ok = try get(port, ["--cert", admin.appendingPathComponent("school.pem").path, "--key", admin.appendingPathComponent("school-key.pem").path])
        XCTAssertEqual(ok.exit, 0)
        XCTAssertEqual(ok.code, "200")

        let (tokenPort, tokenTask) = try await serve { $0.tokenFile = tokenFile }
        defer { tokenTask.cancel() }
        XCTAssertEqual(try get(tokenPort, []).code, "401")
        XCTAssertEqual(try get(tokenPort, ["-H", "Authorization: Bearer tls-token-0123456789abcdef"]).code, "200")
    }
}
