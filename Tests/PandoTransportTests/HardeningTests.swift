import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PandoCertificates
@testable import PandoTransport
import PandoWire
import XCTest

/// Security review fixes: no school text in coordinator logs, size limits, connection cap,
/// key-file permissions, revocation of the coordinator certificate.
final class HardeningTests: XCTestCase {
    static func frame(_ type: MessageType, json: String) -> [UInt8] {
        let body = Array(json.utf8)
        let n = UInt32(body.count + 1)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type.rawValue] + body
    }

    /// Text a school puts into a malformed message (a bad metric key, an invalid enum value)
    /// never reaches the coordinator's log — neither in messages nor in metadata.
    func testMalformedMessageTextNeverReachesCoordinatorLog() async throws {
        let canary = "my secret diary says zebrapurple lighthouse"
        let pki = try TestPKI()
        let logs = LogCapture()
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        let frames: [(String, [UInt8], String)] = [
            ("bad-metric-key", Self.frame(.roundResult, json: #"{"round":1,"task":"train","nonce":"n1","status":"completed","exampleCount":1,"metrics":{"\#(canary)":0.5}}"#),
             "malformed roundResult message: "),
            ("token-key-bad-value", Self.frame(.roundResult, json: #"{"round":1,"task":"train","nonce":"n1","status":"completed","exampleCount":1,"metrics":{"zebrapurple-lighthouse":"\#(canary)"}}"#),
             "wrong type at metrics.<key>"),
            ("bad-status", Self.frame(.roundResult, json: #"{"round":1,"task":"train","nonce":"n1","status":"\#(canary)","exampleCount":1,"metrics":{}}"#),
             "invalid value at status"),
            ("bad-activity", Self.frame(.heartbeat, json: #"{"sequence":1,"activity":"\#(canary)"}"#),
             "invalid value at activity"),
            ("not-json", Self.frame(.heartbeat, json: canary), "malformed heartbeat message"),
        ]
        for (i, (name, bytes, reason)) in frames.enumerated() {
            let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("leaky-\(i)"), port: server.port),
                                          logger: logs.logger(name))
            let mark = logs.mark
            try await client.withConnection { conn in
                try await injectRaw(conn, bytes)
                let closed = await waitClosed(conn)
                XCTAssertTrue(closed, "\(name): connection not closed")
            }
            let logged = await logs.waitFor([reason, "peer=leaky-\(i)@"], after: mark)
            XCTAssertTrue(logged, "\(name): no line with \(reason)\n\(logs.lines.suffix(4).joined(separator: "\n"))")
        }
        try await Task.sleep(for: .milliseconds(200))  // let "session ended" lines arrive too
        let leaked = logs.lines.filter { $0.contains("zebrapurple") || $0.contains("lighthouse") || $0.contains("diary") }
        XCTAssertEqual(leaked, [], "school text in the coordinator log")
    }

    /// An offer larger than the receiver's limit is refused before anything is written.
    func testOfferAboveMaxSizeIsRefused() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let work = pki.dir.appendingPathComponent("big")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let model = work.appendingPathComponent("model.bin")
        try Data(repeating: 7, count: 3 << 20).write(to: model)
        let senderError = NIOLockedValueBox<String?>(nil)
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord")) { conn, status in
            do { try await conn.sendObject(id: "global-v1", kind: .checkpoint, file: model) } catch {
                senderError.withLockedValue { $0 = "\(error)" }
            }
            try await drainSession(conn, status)
        }
        defer { Task { await server.stop() } }
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("small-disk"), port: server.port),
                                      logger: logs.logger("school"))
        let dest = work.appendingPathComponent("got.bin")
        try await client.withConnection { conn in
            guard case .objectOffer(let offer) = try await conn.receive() else { return XCTFail("offer expected") }
            do {
                try await conn.receiveObject(offer, to: dest, maxSize: 1 << 20)
                XCTFail("oversize object accepted")
            } catch TransportError.transferFailed(let why) {
                XCTAssertTrue(why.contains("exceeds the limit of 1048576 bytes"), why)
            }
        }
        let until = Date().addingTimeInterval(5)
        while senderError.withLockedValue({ $0 }) == nil && Date() < until { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertTrue(senderError.withLockedValue { $0 }?.contains("peer refused object global-v1") ?? false,
                      senderError.withLockedValue { $0 } ?? "sender saw no refusal")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest.path + ".partial"))
    }

    /// The school sizes chunks to the coordinator's `welcome.maxFrameLength`, not only its own limit.
    func testClientRespectsCoordinatorFrameLimit() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let work = pki.dir.appendingPathComponent("small-frames")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let source = work.appendingPathComponent("u.bin")
        try Data((0..<100_000).map { UInt8($0 % 251) }).write(to: source)
        var cfg = pki.serverConfig()
        cfg.limits = WireLimits(maxFrameLength: 4096, maxControlPayload: 4000, chunkSize: 2048)
        let stored = NIOLockedValueBox(false)
        let server = try await RunningServer(cfg, logger: logs.logger("coord")) { conn, status in
            guard case .objectOffer(let offer) = try await conn.receive() else { return }
            try await conn.receiveObject(offer, to: work.appendingPathComponent("got.bin"), maxSize: 1 << 20)
            stored.withLockedValue { $0 = true }
            try await drainSession(conn, status)
        }
        defer { Task { await server.stop() } }
        // The school's own limits are the defaults (1 MiB frames, 256 KiB chunks).
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("s"), port: server.port),
                                      logger: logs.logger("school"))
        try await client.withConnection { conn in
            XCTAssertEqual(conn.peerMaxFrameLength, 4096)
            let stats = try await conn.sendObject(id: "update-1", kind: .update, file: source)
            XCTAssertEqual(stats.size, 100_000)
        }
        // The receipt the client waits for is sent from inside `receiveObject`, before the
        // handler above marks the file stored: give the server its next few instructions.
        for _ in 0..<200 where !stored.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(25)) }
        XCTAssertTrue(stored.withLockedValue { $0 })
        XCTAssertFalse(logs.contains("exceeds the maximum"), logs.lines.joined(separator: "\n"))
    }

    func testChunkLengthNeverTrapsOrExceedsEitherLimit() {
        XCTAssertEqual(PandoConnection.chunkLength(chunkSize: 256 << 10, ownMaxFrame: 1 << 20, peerMaxFrame: nil, idLength: 10), 256 << 10)
        XCTAssertEqual(PandoConnection.chunkLength(chunkSize: 256 << 10, ownMaxFrame: 1 << 20, peerMaxFrame: 4096, idLength: 10), 4096 - 20)
        XCTAssertEqual(PandoConnection.chunkLength(chunkSize: 256 << 10, ownMaxFrame: 100, peerMaxFrame: 1 << 20, idLength: 64), 100 - 74)
        for tiny in [Int.min, -1, 0, 1, 50, 74] {
            XCTAssertEqual(PandoConnection.chunkLength(chunkSize: 1024, ownMaxFrame: tiny, peerMaxFrame: 0, idLength: 64), 1)
            XCTAssertEqual(PandoConnection.chunkLength(chunkSize: 1024, ownMaxFrame: 1 << 20, peerMaxFrame: tiny, idLength: 64), 1)
        }
        XCTAssertEqual(PandoConnection.chunkLength(chunkSize: 0, ownMaxFrame: 1 << 20, peerMaxFrame: nil, idLength: 1), 1)
    }

    /// Connections beyond `maxConnections` are closed at accept; capacity frees up when one closes.
    func testConnectionCap() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        var cfg = pki.serverConfig()
        cfg.maxConnections = 2
        let server = try await RunningServer(cfg, logger: logs.logger("coord"), session: drainSession)
        defer { Task { await server.stop() } }
        var holders: [Task<Void, Error>] = []
        let release = AsyncStream<Void>.makeStream()
        let up = AsyncStream<Void>.makeStream()
        for id in ["a", "b"] {
            let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school(id), port: server.port),
                                          logger: logs.logger(id))
            holders.append(Task {
                try await client.withConnection { _ in
                    up.continuation.yield()
                    for await _ in release.stream {}
                }
            })
        }
        var count = 0
        for await _ in up.stream {
            count += 1
            if count == 2 { break }
        }
        let third = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("c"), port: server.port),
                                     logger: logs.logger("c"))
        do {
            try await third.withConnection { _ in XCTFail("third connection admitted over the cap") }
        } catch is TransportError {}
        let logged = await logs.waitFor("refusing connections: 2 connections open")
        XCTAssertTrue(logged, logs.lines.joined(separator: "\n"))
        release.continuation.finish()
        for h in holders { try await h.value }
        // Capacity is back once the others have closed.
        let deadline = Date().addingTimeInterval(5)
        var admitted = false
        while !admitted && Date() < deadline {
            do {
                try await third.withConnection { XCTAssertEqual($0.schoolID, "c") }
                admitted = true
            } catch {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        XCTAssertTrue(admitted)
    }

    func testKeyFilesReadableByOthersAreRefused() async throws {
        let pki = try TestPKI()
        let school = try pki.school("s")
        let schoolKey = school.appendingPathComponent("school-key.pem").path
        chmod(schoolKey, 0o640)
        XCTAssertThrowsError(try SchoolClient(configuration: pki.clientConfig(school: school, port: 1), logger: Logger(label: "t"))) { e in
            XCTAssertTrue("\(e)".contains(schoolKey) && "\(e)".contains("chmod 600"), "\(e)")
        }
        let coordKey = pki.dir.appendingPathComponent("coordinator/coordinator-key.pem").path
        chmod(coordKey, 0o644)
        XCTAssertThrowsError(try CoordinatorServer(configuration: pki.serverConfig(), logger: Logger(label: "t"))) { e in
            XCTAssertTrue("\(e)".contains(coordKey) && "\(e)".contains("chmod 600"), "\(e)")
        }
    }

    /// After `issue-coordinator` re-issues the certificate, a school (whose bundle carries the new
    /// crl.pem) refuses a coordinator still presenting the old, possibly leaked, certificate.
    func testSchoolRefusesRevokedCoordinatorCertificate() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let fm = FileManager.default
        let oldDir = pki.dir.appendingPathComponent("old-coordinator")
        try fm.copyItem(at: CertificateAuthority.coordinatorDirectory(pki.dir), to: oldDir)
        try pki.ca.issueCoordinator(hosts: ["localhost", "127.0.0.1"])
        let school = try pki.school("careful")
        var cfg = pki.serverConfig()
        cfg.certificatePath = oldDir.appendingPathComponent("coordinator.pem").path
        cfg.privateKeyPath = oldDir.appendingPathComponent("coordinator-key.pem").path
        chmod(cfg.privateKeyPath, 0o600)
        let impostor = try await RunningServer(cfg, logger: logs.logger("coord"), session: drainSession)
        defer { Task { await impostor.stop() } }
        let client = try SchoolClient(configuration: pki.clientConfig(school: school, port: impostor.port), logger: logs.logger("school"))
        do {
            try await client.withConnection { _ in XCTFail("connected to a revoked coordinator certificate") }
            XCTFail("must throw")
        } catch let e as TransportError {
            XCTAssertTrue("\(e)".contains("was revoked at"), "\(e)")
        }
        // The genuine (re-issued) coordinator is accepted.
        let genuine = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord2"), session: drainSession)
        defer { Task { await genuine.stop() } }
        let ok = try SchoolClient(configuration: pki.clientConfig(school: school, port: genuine.port), logger: logs.logger("school"))
        try await ok.withConnection { XCTAssertEqual($0.schoolID, "careful") }
    }

    func testSchoolBundleWithoutCRLIsAClearConfigurationError() throws {
        let pki = try TestPKI()
        let school = try pki.school("s")
        try FileManager.default.removeItem(at: school.appendingPathComponent("crl.pem"))
        XCTAssertThrowsError(try SchoolClient(configuration: pki.clientConfig(school: school, port: 1), logger: Logger(label: "t"))) { e in
            XCTAssertTrue("\(e)".contains("crl.pem"), "\(e)")
        }
    }
}
