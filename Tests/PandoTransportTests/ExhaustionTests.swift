import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOSSL
import PandoCertificates
@testable import PandoTransport
import PandoWire
import XCTest

/// A hostile peer cannot exhaust the coordinator (issue 17, items 3 and 5).
final class ExhaustionTests: XCTestCase {
    /// A peer that never reads gets no queue of acks: while the channel is not writable,
    /// acks are coalesced into one for the newest heartbeat, written once it drains.
    func testHeartbeatAcksAreCoalescedWhileNotWritable() throws {
        let status = SessionStatus()
        let channel = EmbeddedChannel(handler: HeartbeatResponder(status: status, rate: HeartbeatRate(burst: 1 << 30, perSecond: 1 << 30)))
        try channel.writeInbound(WireMessage.heartbeat(Heartbeat(sequence: 1, activity: .idle)))
        XCTAssertEqual(try channel.readOutbound(as: WireMessage.self), .heartbeatAck(HeartbeatAck(sequence: 1)))
        channel.isWritable = false
        for seq in 2...10_000 as ClosedRange<UInt64> {
            try channel.writeInbound(WireMessage.heartbeat(Heartbeat(sequence: seq, activity: .training, progress: 0.5)))
        }
        XCTAssertNil(try channel.readOutbound(as: WireMessage.self), "acks queued while the peer was not reading")
        XCTAssertEqual(status.heartbeatsReceived, 10_000)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(try channel.readOutbound(as: WireMessage.self), .heartbeatAck(HeartbeatAck(sequence: 10_000)))
        XCTAssertNil(try channel.readOutbound(as: WireMessage.self))
        _ = try channel.finish()
    }

    func testHeartbeatRateLimit() {
        var rate = HeartbeatRate(burst: 100, perSecond: 20)
        let t0 = NIODeadline.now()
        for _ in 0..<100 { XCTAssertTrue(rate.admit(now: t0)) }
        XCTAssertFalse(rate.admit(now: t0), "burst exceeded")
        XCTAssertTrue(rate.admit(now: t0 + .milliseconds(60)), "refilled at 20 per second")
        var steady = HeartbeatRate(burst: 100, perSecond: 20)
        for i in 0..<10_000 { XCTAssertTrue(steady.admit(now: t0 + .milliseconds(Int64(i) * 100))) }  // 10 a second forever
    }

    /// Over the network: a school that writes up to 2 million heartbeats and never reads is
    /// closed by the coordinator, and the coordinator's memory does not grow with the flood.
    func testHeartbeatFloodIsClosedAndBounded() async throws {
        let pki = try TestPKI()
        let school = try pki.school("flooder")
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let before = residentMB()
        var tls = TLSConfiguration.makeClientConfiguration()
        TLSPolicy.apply(to: &tls)
        tls.certificateVerification = .none
        tls.certificateChain = [.certificate(try NIOSSLCertificate(file: school.appendingPathComponent("school.pem").path, format: .pem))]
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: school.appendingPathComponent("school-key.pem").path, format: .pem))
        let context = try NIOSSLContext(configuration: tls)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil)) }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        try await channel.writeAndFlush(try WireCodec.frame(.hello(Hello(softwareVersion: PandoTransportInfo.softwareVersion)))).get()
        try await Task.sleep(for: .milliseconds(300))  // TLS done, welcome received
        try await channel.setOption(.autoRead, value: false).get()  // from now on, never read what the coordinator sends
        var sent = 0
        let frame = try WireCodec.frame(.heartbeat(Heartbeat(sequence: 1, activity: .training, progress: 0.5)))
        var batch = channel.allocator.buffer(capacity: frame.readableBytes * 1000)
        for _ in 0..<1000 { batch.writeImmutableBuffer(frame) }
        let deadline = Date().addingTimeInterval(20)
        // Each batch is written once the previous one reached the socket: the flooder's own
        // memory stays flat, so the RSS figure below is the coordinator's.
        while sent < 2_000_000, channel.isActive, Date() < deadline {
            do { try await channel.writeAndFlush(batch).get() } catch { break }
            sent += 1000
        }
        try? await channel.closeFuture.get()
        let logged = await logs.waitFor("heartbeat flood")
        XCTAssertTrue(logged, logs.lines.suffix(5).joined(separator: "\n"))
        XCTAssertLessThan(sent, 2_000_000, "the flood was never cut off")
        let growth = residentMB() - before
        print("heartbeat flood: \(sent) heartbeats written before the coordinator closed the connection; RSS growth \(String(format: "%.1f", growth)) MB")
        XCTAssertLessThan(growth, 64, "coordinator memory grew with the flood")
        XCTAssertTrue(server.server.connectedSchools.isEmpty)
    }

    /// Sockets that never speak are pending handshakes, not sessions: with
    /// `maxConnections = 4`, four of them do not keep a real school out; and when the
    /// pending pool is full, the oldest is closed to make room.
    func testSilentSocketsCannotLockOutSchools() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        var cfg = pki.serverConfig()
        cfg.maxConnections = 4
        cfg.maxPendingHandshakes = 4
        let server = try await RunningServer(cfg, logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        var silent: [Channel] = []
        for _ in 0..<4 {
            silent.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: server.port).get())
        }
        defer { silent.forEach { $0.close(promise: nil) } }
        try await Task.sleep(for: .milliseconds(100))
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("real"), port: server.port),
                                      logger: logs.logger("school"))
        try await client.withConnection { conn in XCTAssertEqual(conn.schoolID, "real") }
        let evicted = await logs.waitFor("closing the oldest unauthenticated connection")
        XCTAssertTrue(evicted, logs.lines.joined(separator: "\n"))
        // The one accepted first (accept order across event loops need not be connect order) was closed.
        let deadline = Date().addingTimeInterval(3)
        while silent.allSatisfy(\.isActive), Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertEqual(silent.filter { !$0.isActive }.count, 1, "one silent socket was closed to make room")
    }

    /// More pending handshakes from one address than `maxPendingHandshakesPerAddress` are closed at accept.
    func testPendingHandshakesPerAddressAreCapped() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        var cfg = pki.serverConfig()
        cfg.maxPendingHandshakesPerAddress = 3
        let server = try await RunningServer(cfg, logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        var sockets: [Channel] = []
        for _ in 0..<5 {
            sockets.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: server.port).get())
        }
        defer { sockets.forEach { $0.close(promise: nil) } }
        let logged = await logs.waitFor("3 handshakes already pending from it")
        XCTAssertTrue(logged, logs.lines.joined(separator: "\n"))
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertEqual(sockets.filter(\.isActive).count, 3)
    }
}

/// A transfer that stops moving ends, whatever else the peer keeps sending (issue 17, item 6).
final class StallTests: XCTestCase {
    func testStalledUploadIsClosedDespiteHeartbeats() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        var cfg = pki.serverConfig(heartbeat: .milliseconds(100))
        cfg.limits.transferStallSeconds = 0.5
        let outcome = NIOLockedValueBox<String?>(nil)
        let dest = pki.dir.appendingPathComponent("upload.bin")
        let server = try await RunningServer(cfg, logger: logs.logger("coord")) { conn, _ in
            guard case .objectOffer(let offer) = try await conn.receive() else { return }
            do {
                try await conn.receiveObject(offer, to: dest, maxSize: offer.size)
                outcome.withLockedValue { $0 = "stored" }
            } catch {
                outcome.withLockedValue { $0 = "\(error)" }
            }
        }
        defer { Task { await server.stop() } }
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("staller"), port: server.port),
                                      logger: logs.logger("school"))
        let started = Date()
        try? await client.withConnection { conn in
            // Offer 1 MB, then send nothing of it; the client's heartbeats keep flowing.
            try await conn.send(.objectOffer(ObjectOffer(id: "update-r1", kind: .update, size: 1 << 20, sha256: ObjectDigest.of(Data([0])))))
            for _ in 0..<40 where outcome.withLockedValue({ $0 }) == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let result = try XCTUnwrap(outcome.withLockedValue { $0 }, "the stalled transfer was still open after 4 s")
        XCTAssertTrue(result.contains("stalled"), result)
        XCTAssertLessThan(Date().timeIntervalSince(started), 3.5)
        XCTAssertGreaterThan(client.heartbeatsSent, 2, "heartbeats were flowing during the stall")
    }
}

/// A peer that reconnects and misbehaves in a loop gets a bounded number of log lines
/// (issue 17, item 6): 30 a minute per address, then one line saying how many were left out.
final class LogBudgetTests: XCTestCase {
    func testLinesAboutOneAddressAreBudgeted() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        for _ in 0..<100 {
            let c = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: server.port).get()
            try await c.writeAndFlush(ByteBuffer(bytes: Array("GET / HTTP/1.0\r\n\r\n".utf8))).get()  // not TLS: the handshake fails
            try? await c.closeFuture.get()
        }
        try await Task.sleep(for: .milliseconds(300))
        let lines = logs.lines.filter { $0.contains("127.0.0.1") && !$0.contains("listening") }
        XCTAssertGreaterThanOrEqual(lines.count, 10, "the first failures are logged")
        XCTAssertLessThanOrEqual(lines.count, 30, "100 bad connections from one address made \(lines.count) lines")
        var limiter = PeerLogLimiter(perMinute: 2)
        let t0 = NIODeadline.now()
        XCTAssertTrue(limiter.admit("a", now: t0).allowed)
        XCTAssertTrue(limiter.admit("a", now: t0).allowed)
        XCTAssertFalse(limiter.admit("a", now: t0).allowed)
        XCTAssertTrue(limiter.admit("b", now: t0).allowed, "another address has its own budget")
        let later = limiter.admit("a", now: t0 + .seconds(61))
        XCTAssertTrue(later.allowed)
        XCTAssertEqual(later.suppressed, 1, "the next line says how many were left out")
        limiter = PeerLogLimiter()
    }
}

/// A close that races the `hello` never leaks a session slot (review finding).
final class AdmissionTests: XCTestCase {
    func testAClosedConnectionIsNeverPromoted() throws {
        let admission = Admission(maxSessions: 1, maxPending: 4, maxPendingPerAddress: 4)
        let a = EmbeddedChannel(), b = EmbeddedChannel(), c = EmbeddedChannel()
        guard case .admitted = admission.enter(a, address: "10.0.0.1") else { return XCTFail() }
        admission.leave(a)  // closed before its hello was handled
        XCTAssertFalse(admission.promote(a).0, "a connection that left became a session")
        XCTAssertEqual(admission.sessionCount, 0)
        guard case .admitted = admission.enter(b, address: "10.0.0.1") else { return XCTFail() }
        XCTAssertTrue(admission.promote(b).0)
        guard case .admitted = admission.enter(c, address: "10.0.0.1") else { return XCTFail() }
        XCTAssertFalse(admission.promote(c).0, "over maxSessions")
        admission.leave(b)
        admission.leave(c)
        XCTAssertEqual(admission.sessionCount, 0)
        XCTAssertEqual(admission.pendingCount, 0)
    }
}
