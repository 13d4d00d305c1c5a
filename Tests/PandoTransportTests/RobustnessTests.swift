import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PandoCertificates
@testable import PandoTransport
import PandoWire
import XCTest

final class RobustnessTests: XCTestCase {
    /// Each hostile input closes only its own connection; a bystander session keeps
    /// heartbeating and new schools still connect.
    func testHostileInputClosesOnlyThatConnection() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(idle: .seconds(1), heartbeat: .milliseconds(100)),
                                             logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }

        // A well-behaved bystander stays connected throughout.
        let bystander = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("bystander"), port: server.port),
                                         logger: logs.logger("bystander"))
        let release = AsyncStream<Void>.makeStream()
        let bystanderTask = Task {
            try await bystander.withConnection { conn in
                for await _ in release.stream {}
                return conn.channel.isActive
            }
        }

        let cases: [(String, [UInt8], String)] = [
            ("garbage", Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "exceeds the maximum"),
            ("oversize", [0x7F, 0xFF, 0xFF, 0xFF, 0x12], "exceeds the maximum"),
            ("unknown-type", [0, 0, 0, 1, 0x7E], "unknown message type 0x7e"),
            ("empty-frame", [0, 0, 0, 0], "frame length 0"),
            ("bad-json", [0, 0, 0, 4, 0x04, 0x7B, 0x7B, 0x7D], "malformed heartbeat"),
            ("wrong-direction", Array(try WireCodec.frame(.welcome(Welcome(softwareVersion: "x", capabilities: [], schoolID: "x",
                heartbeatIntervalMillis: 1, idleTimeoutMillis: 1, maxFrameLength: 1))).readableBytesView), "welcome is not allowed"),
            ("stops-mid-frame", [0, 0, 0, 100, 0x04, 0x7B], "nothing received for 1000 ms"),
        ]
        for (i, (name, bytes, reason)) in cases.enumerated() {
            let school = try pki.school("hostile-\(i)")
            let client = try SchoolClient(configuration: pki.clientConfig(school: school, port: server.port),
                                          logger: logs.logger(name))
            client._testingPauseHeartbeats.withLockedValue { $0 = true }
            let mark = logs.mark
            try await client.withConnection { conn in
                try await injectRaw(conn, bytes)
                let closed = await waitClosed(conn, timeout: 5)
                XCTAssertTrue(closed, "\(name): server did not close the connection")
            }
            // Only this case's lines, and only the line about this school's connection: cases that
            // share a reason ("exceeds the maximum") cannot pass on each other's lines.
            let logged = await logs.waitFor([reason, "peer=hostile-\(i)@"], after: mark)
            XCTAssertTrue(logged, "\(name): no log line with \(reason.debugDescription)\n\(logs.lines.suffix(5).joined(separator: "\n"))")
        }

        // Truncated frame followed by the client closing: decodeLast reports it.
        let trunc = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("truncator"), port: server.port),
                                     logger: logs.logger("trunc"))
        trunc._testingPauseHeartbeats.withLockedValue { $0 = true }
        let truncMark = logs.mark
        try await trunc.withConnection { conn in
            try await injectRaw(conn, [0, 0, 0, 50, 0x04, 0x7B, 0x22])
            try await Task.sleep(for: .milliseconds(100))
            try await conn.channel.close()
        }
        let truncLogged = await logs.waitFor(["connection ended inside a frame", "truncator"], after: truncMark)
        XCTAssertTrue(truncLogged)

        // The server still serves: the bystander is alive and a new school connects.
        XCTAssertTrue(server.server.connectedSchools.contains("bystander"))
        let late = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("late"), port: server.port),
                                    logger: logs.logger("late"))
        try await late.withConnection { XCTAssertEqual($0.schoolID, "late") }
        release.continuation.finish()
        let alive = try await bystanderTask.value
        XCTAssertTrue(alive, "bystander connection was dropped")
        XCTAssertGreaterThan(bystander.heartbeatsSent, 5)
    }

    /// A school that is training (only heartbeating) for longer than the idle timeout is not dropped;
    /// a silent one is.
    func testTrainingSchoolIsNotDeclaredDead() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(idle: .milliseconds(800), heartbeat: .milliseconds(150)),
                                             logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        var cfg = pki.clientConfig(school: try pki.school("trainer"), port: server.port)
        cfg.idleTimeout = .milliseconds(800)
        let client = try SchoolClient(configuration: cfg, logger: logs.logger("school"))
        client.setActivity(.training, progress: 0.1)
        try await client.withConnection { conn in
            try await Task.sleep(for: .milliseconds(2500))  // 3× the idle timeout of "local training"
            XCTAssertTrue(conn.channel.isActive)
            let status = server.server.status(of: "trainer")
            XCTAssertEqual(status?.activity, .training)
            XCTAssertEqual(status?.progress, 0.1)
            XCTAssertGreaterThan(status?.heartbeatsReceived ?? 0, 8)
        }
        XCTAssertFalse(logs.contains("nothing received"))
    }

    func testHundredConcurrentSchoolsWithHeartbeats() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(idle: .seconds(20), heartbeat: .milliseconds(250)),
                                             logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let n = 100
        let clients = try (0..<n).map { i in
            var cfg = pki.clientConfig(school: try pki.school(String(format: "school-%03d", i)), port: server.port)
            cfg.idleTimeout = .seconds(20)
            return try SchoolClient(configuration: cfg, logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
        }
        let start = Date()
        let allUp = AsyncStream<Void>.makeStream()
        let released = NIOLockedValueBox(false)
        let tasks = clients.map { client in
            Task {
                try await client.run(maxAttempts: 5) { _ in
                    allUp.continuation.yield()
                    while !released.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(50)) }
                    while client.heartbeatsSent < 3 { try await Task.sleep(for: .milliseconds(50)) }
                }
            }
        }
        var up = 0
        for await _ in allUp.stream {
            up += 1
            if up == n { break }
        }
        let connectSeconds = Date().timeIntervalSince(start)
        // Let heartbeats flow on all connections.
        let deadline = Date().addingTimeInterval(20)
        while server.server.connectedSchools.count < n || clients.contains(where: { $0.heartbeatsSent < 3 }) {
            XCTAssertLessThan(Date(), deadline, "only \(server.server.connectedSchools.count) schools connected")
            if Date() > deadline { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertEqual(server.server.connectedSchools.count, n)
        let acked = server.server.connectedSchools.compactMap { server.server.status(of: $0)?.heartbeatsReceived }.filter { $0 >= 2 }.count
        XCTAssertEqual(acked, n)
        released.withLockedValue { $0 = true }
        for t in tasks { try await t.value }
        print("100 schools: all connected (mutual TLS + handshake) in \(String(format: "%.2f", connectSeconds)) s")
        XCTAssertFalse(logs.contains("closing connection"))
    }
}
