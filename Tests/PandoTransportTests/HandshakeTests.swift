import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PandoCertificates
@testable import PandoTransport
import PandoWire
import XCTest

final class HandshakeTests: XCTestCase {
    func testHandshakeSucceedsIdentityFromCertificate() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let seen = NIOLockedValueBox<[String]>([])
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord")) { conn, status in
            seen.withLockedValue { $0.append(conn.schoolID.value) }
            try await conn.send(.roundAssignment(RoundAssignment(round: 1, model: ObjectRef(id: "m1", size: 0, sha256: .of([UInt8]())), nonce: "n1", parameters: ["lr": 0.001])))
            try await drainSession(conn, status)
        }
        defer { Task { await server.stop() } }
        let school = try pki.school("lincoln-high")
        let client = try SchoolClient(configuration: pki.clientConfig(school: school, port: server.port), logger: logs.logger("school"))
        let got = try await client.withConnection { conn -> WireMessage in
            XCTAssertEqual(conn.schoolID, "lincoln-high")
            XCTAssertTrue(conn.capabilities.contains("resume.v1"))
            return try await conn.receive()
        }
        // TLS 1.3 is negotiated between two Pando ends.
        let version = try await client.withConnection { conn in
            try await conn.channel.eventLoop.submit {
                try conn.channel.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).tlsVersion
            }.get()
        }
        XCTAssertEqual(version, .tlsv13)
        guard case .roundAssignment(let a) = got else { return XCTFail("got \(got)") }
        XCTAssertEqual(a.round, 1)
        XCTAssertEqual(seen.withLockedValue { $0 }.first, "lincoln-high")
        let connected = await logs.waitFor("school connected")
        XCTAssertTrue(connected)
        XCTAssertTrue(logs.contains("school=lincoln-high"))
    }

    func testRefusesOtherCAsCertificate() async throws {
        let pki = try TestPKI()
        let rogue = try TestPKI(name: "Rogue District")
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let rogueSchool = try rogue.school("lincoln-high")
        // The rogue school trusts the real CA for the server, but its own cert is from the rogue CA.
        var cfg = pki.clientConfig(school: rogueSchool, port: server.port)
        cfg.caCertificatePath = pki.ca.caPath.path
        cfg.revocationListPath = pki.ca.crlPath.path
        try await assertRefused(cfg, logs: logs, reason: "was not issued by the district CA")
    }

    func testRefusesExpiredCertificate() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let school = try pki.school("old-school", notBefore: Date().addingTimeInterval(-86400 * 30),
                                    notAfter: Date().addingTimeInterval(-86400))
        try await assertRefused(pki.clientConfig(school: school, port: server.port), logs: logs, reason: "expired at")
    }

    func testRevocationTakesEffectWithoutRestart() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let school = try pki.school("revoked-school")
        let cfg = pki.clientConfig(school: school, port: server.port)
        let client = try SchoolClient(configuration: cfg, logger: logs.logger("school"))
        try await client.withConnection { _ in }  // accepted before revocation
        try pki.ca.revoke(schoolID: "revoked-school")
        try await assertRefused(cfg, logs: logs, reason: "was revoked at")
        // Another school is still fine.
        let other = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("ok-school"), port: server.port),
                                     logger: logs.logger("school"))
        try await other.withConnection { XCTAssertEqual($0.schoolID, "ok-school") }
    }

    func testRefusesMissingClientCertificate() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates([try NIOSSLCertificate(file: pki.ca.caPath.path, format: .pem)])
        let ctx = try NIOSSLContext(configuration: tls)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: ctx, serverHostname: "localhost"))
                }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        channel.writeAndFlush(try WireCodec.frame(.hello(Hello(softwareVersion: "test"))), promise: nil)
        let noted = await logs.waitFor("presented no certificate")
        XCTAssertTrue(noted, logs.lines.joined(separator: "\n"))
        try? await channel.closeFuture.get()
        XCTAssertTrue(server.server.connectedSchools.isEmpty)
    }

    /// Before `hello`: garbage closes the connection with a logged reason, a silent client is
    /// dropped at the handshake timeout, and a TLS 1.1-only client cannot connect.
    func testBeforeHelloGarbageSilenceAndOldTLS() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        var cfg = pki.serverConfig()
        cfg.handshakeTimeout = .milliseconds(500)
        let server = try await RunningServer(cfg, logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let school = try pki.school("raw")
        func rawClient(maxTLS: TLSVersion = .tlsv13) async throws -> Channel {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates([try NIOSSLCertificate(file: pki.ca.caPath.path, format: .pem)])
            tls.certificateChain = [.certificate(try NIOSSLCertificate(file: school.appendingPathComponent("school.pem").path, format: .pem))]
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: school.appendingPathComponent("school-key.pem").path, format: .pem))
            tls.minimumTLSVersion = .tlsv1
            tls.maximumTLSVersion = maxTLS
            let ctx = try NIOSSLContext(configuration: tls)
            return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: ctx, serverHostname: "localhost"))
                    }
                }
                .connect(host: "127.0.0.1", port: server.port).get()
        }
        let garbage = try await rawClient()
        try await garbage.writeAndFlush(ByteBuffer(bytes: [0, 0, 0, 1, 0xEE])).get()
        try await garbage.closeFuture.get()
        let g = await logs.waitFor("unknown message type 0xee")
        XCTAssertTrue(g)

        let silent = try await rawClient()
        try await silent.closeFuture.get()  // closed by the coordinator
        let s = await logs.waitFor("no hello within the handshake timeout")
        XCTAssertTrue(s)

        let old = try await rawClient(maxTLS: .tlsv12)
        try? await old.closeFuture.get()
        let o = await logs.waitFor("the coordinator speaks TLS 1.3 only")
        XCTAssertTrue(o, logs.lines.joined(separator: "\n"))
        XCTAssertTrue(server.server.connectedSchools.isEmpty)
    }

    func testClientRefusesWrongHostName() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let cfg = pki.clientConfig(school: try pki.school("s1"), port: server.port, serverName: "coordinator.other-district.example")
        let client = try SchoolClient(configuration: cfg, logger: logs.logger("school"))
        do {
            try await client.withConnection { _ in XCTFail("must not connect") }
            XCTFail("must throw")
        } catch let e as TransportError {
            XCTAssertTrue("\(e)".contains("does not name coordinator.other-district.example"), "\(e)")
        }
        XCTAssertTrue(logs.contains("handshake failed"))
    }

    func testProtocolVersionMismatchIsClearOnBothSides() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        var cfg = pki.clientConfig(school: try pki.school("future-school"), port: server.port)
        cfg.protocolVersion = 99
        let client = try SchoolClient(configuration: cfg, logger: logs.logger("school"))
        do {
            try await client.withConnection { _ in XCTFail("must not connect") }
            XCTFail("must throw")
        } catch TransportError.rejected(let r) {
            XCTAssertEqual(r.code, .protocolVersionMismatch)
            XCTAssertTrue(r.reason.contains("client speaks Pando protocol 99"), r.reason)
            XCTAssertEqual(r.supportedProtocolVersions, [PandoProtocol.version])
        }
        let logged = await logs.waitFor("rejected school future-school: client speaks Pando protocol 99")
        XCTAssertTrue(logged)
    }

    func testSecondConnectionOfASchoolReplacesTheFirst() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let cfg = pki.clientConfig(school: try pki.school("twice"), port: server.port)
        let a = try SchoolClient(configuration: cfg, logger: logs.logger("a"))
        let b = try SchoolClient(configuration: cfg, logger: logs.logger("b"))
        try await a.withConnection { first in
            try await b.withConnection { _ in
                let closed = await waitClosed(first)
                XCTAssertTrue(closed, "older session must be closed")
                XCTAssertEqual(server.server.connectedSchools, ["twice"])
            }
        }
        XCTAssertTrue(logs.contains("replacing older session of school twice"))
    }

    func testBackoffIsJitteredExponentialAndCapped() {
        let b = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        var rng = SeededGenerator(seed: 7)
        for attempt in 1...12 {
            let cap = min(5.0, 0.1 * pow(2, Double(attempt - 1)))
            var seen = Set<Int>()
            for _ in 0..<50 {
                let d = Backoff.seconds(b.delay(attempt: attempt, using: &rng))
                XCTAssertGreaterThanOrEqual(d, cap / 2 - 1e-9)
                XCTAssertLessThanOrEqual(d, cap + 1e-9)
                seen.insert(Int(d * 1e6))
            }
            XCTAssertGreaterThan(seen.count, 10, "jittered")
        }
    }

    func testClientReconnectsWithBackoffUntilCoordinatorAppears() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        // Find a free port, then start the client before the coordinator listens on it.
        let probe = try await RunningServer(pki.serverConfig(), logger: logs.logger("probe"), session: drainSession)
        let port = probe.port
        await probe.stop()
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("early"), port: port),
                                      logger: logs.logger("school"))
        let done = Task { try await client.run(maxAttempts: 100) { conn in XCTAssertEqual(conn.schoolID, "early") } }
        try await Task.sleep(for: .milliseconds(600))
        var cfg = pki.serverConfig()
        cfg.port = port
        let server = try await RunningServer(cfg, logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        try await done.value
        XCTAssertTrue(logs.contains("retrying in"))
        XCTAssertEqual(client.connectionCount, 1)
    }

    private func assertRefused(_ cfg: SchoolTransportConfiguration, logs: LogCapture, reason: String,
                               file: StaticString = #filePath, line: UInt = #line) async throws {
        let client = try SchoolClient(configuration: cfg, logger: logs.logger("school"))
        do {
            try await client.withConnection { _ in XCTFail("must not connect", file: file, line: line) }
            XCTFail("must throw", file: file, line: line)
        } catch let e as TransportError {
            // TLS 1.3: the client learns of the refusal as an alert or a close during the handshake.
            XCTAssertTrue("\(e)".contains("refused") || "\(e)".contains("closed"), "\(e)", file: file, line: line)
        }
        let logged = await logs.waitFor(reason)
        XCTAssertTrue(logged, "coordinator log lacks \(reason.debugDescription):\n\(logs.lines.joined(separator: "\n"))", file: file, line: line)
    }
}

struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
