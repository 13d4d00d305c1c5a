import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PandoCertificates
@testable import PandoTransport
import PandoWire
import XCTest

final class TransferTests: XCTestCase {
    /// Writes `size` pseudo-random bytes in 1 MiB blocks (never the whole object in memory).
    func makeObject(size: Int, at url: URL) throws -> ObjectDigest {
        FileManager.default.createFile(atPath: url.path, contents: nil)
        let h = try FileHandle(forWritingTo: url)
        defer { try? h.close() }
        var hasher = SHA256()
        var x: UInt64 = 0x1234_5678
        var left = size
        var block = [UInt8](repeating: 0, count: 1 << 20)
        while left > 0 {
            let n = min(left, block.count)
            block.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for i in 0..<(n + 7) / 8 where i < words.count {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17
                    words[i] = x
                }
            }
            hasher.update(data: block[0..<n])
            try h.write(contentsOf: block[0..<n])
            left -= n
        }
        return ObjectDigest(hasher.finalize())
    }

    /// A large object (PANDO_TRANSFER_TEST_MB, default 64; the 300 MB runs with
    /// PANDO_TRANSFER_TEST_MB=300) crosses school → coordinator with bounded memory; the
    /// connection is cut half-way and the transfer resumes from the stored offset.
    func testLargeObjectBoundedMemoryAndResumeAfterCut() async throws {
        let mb = Int(ProcessInfo.processInfo.environment["PANDO_TRANSFER_TEST_MB"] ?? "") ?? 64
        let size = mb << 20
        let pki = try TestPKI()
        let logs = LogCapture()
        let work = pki.dir.appendingPathComponent("transfer")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let source = work.appendingPathComponent("update.safetensors")
        let digest = try makeObject(size: size, at: source)
        let dest = work.appendingPathComponent("received.safetensors")

        // Bytes the sender has handed to the connection but the receiver has not yet stored.
        let flight = NIOLockedValueBox<(sent: UInt64, received: UInt64, maxInFlight: UInt64)>((0, 0, 0))
        struct Attempt: Sendable { var start: UInt64; var bytes: UInt64; var ok: Bool; var seconds: Double }
        let attempts = NIOLockedValueBox<[Attempt]>([])
        let cutDone = NIOLockedValueBox(false)
        let server = try await RunningServer(pki.serverConfig(idle: .seconds(30), heartbeat: .milliseconds(500)),
                                             logger: logs.logger("coord")) { conn, _ in
            let first = try await conn.receive()
            guard case .objectOffer(let offer) = first else { throw TransportError.protocolViolation("want offer") }
            let startedAt = Date()
            do {
                let stats = try await conn.receiveObject(offer, to: dest, maxSize: UInt64(size)) { got, total in
                    flight.withLockedValue { $0.received = got }
                    if got >= total / 2, !cutDone.withLockedValue({ $0 }) {
                        cutDone.withLockedValue { $0 = true }
                        conn.close()  // the network "fails" half-way
                    }
                }
                attempts.withLockedValue { $0.append(Attempt(start: stats.startOffset, bytes: stats.bytesTransferred, ok: true, seconds: stats.seconds)) }
            } catch {
                attempts.withLockedValue { $0.append(Attempt(start: 0, bytes: 0, ok: false, seconds: Date().timeIntervalSince(startedAt))) }
                throw error
            }
            try await drainSession(conn, SessionStatus())
        }
        defer { Task { await server.stop() } }

        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("uploader"), port: server.port),
                                      logger: logs.logger("school"))
        let baseline = residentMB()
        let peak = NIOLockedValueBox(baseline)
        let sampler = Task {
            while !Task.isCancelled {
                let r = residentMB()
                peak.withLockedValue { $0 = max($0, r) }
                try? await Task.sleep(for: .milliseconds(25))
            }
        }
        let t0 = Date()
        let sendStats = NIOLockedValueBox<[PandoConnection.TransferStats]>([])
        try await client.run(maxAttempts: 5) { conn in
            client.setActivity(.transferring)
            let s = try await conn.sendObject(id: "update-r1", kind: .update, file: source, sha256: digest) { sent, _ in
                flight.withLockedValue { f in
                    f.sent = sent
                    if sent > f.received { f.maxInFlight = max(f.maxInFlight, sent - f.received) }
                }
            }
            sendStats.withLockedValue { $0.append(s) }
        }
        let total = Date().timeIntervalSince(t0)
        sampler.cancel()
        let growth = peak.withLockedValue { $0 } - baseline

        // The coordinator records its attempt just after sending the receipt: wait for it.
        let until = Date().addingTimeInterval(5)
        while attempts.withLockedValue({ $0.count }) < 2 && Date() < until { try await Task.sleep(for: .milliseconds(10)) }
        let a = attempts.withLockedValue { $0 }
        XCTAssertEqual(a.count, 2, "one cut attempt + one resumed attempt: \(a)")
        XCTAssertEqual(a.last?.ok, true)
        let resumed = try XCTUnwrap(a.last)
        XCTAssertGreaterThanOrEqual(resumed.start, UInt64(size / 2), "resumed from the stored offset, not from zero")
        XCTAssertLessThanOrEqual(resumed.bytes, UInt64(size / 2), "second attempt carried only the rest")
        XCTAssertEqual(client.connectionCount, 2)
        let received = try FileObjectSource(url: dest)
        defer { received.close() }
        XCTAssertEqual(received.size, UInt64(size))
        XCTAssertEqual(try received.sha256(), digest)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest.path + ".partial"))
        // Both ends live in this process, so this bounds the sum of the two sides.
        XCTAssertLessThan(growth, 64, "RSS grew \(growth) MB")
        // Bounded buffering, independent of object size: kernel socket buffers (loopback autotunes
        // them to several MB each way) + NIO/TLS buffers + the async-channel queue of ≤ 10 chunks.
        // Measured 16–22 MB for both 64 MB and 300 MB objects on a host whose tcp_rmem max is 32 MB.
        let inFlightMB = Double(flight.withLockedValue { $0.maxInFlight }) / 1_048_576
        XCTAssertLessThan(inFlightMB, 48, "up to \(inFlightMB) MB in flight")
        print(String(format: "transfer %d MB school→coordinator over mutual TLS on loopback: %.2f s total incl. cut + reconnect (%.1f MB/s); resumed at %.1f MB, resumed leg %.1f MB/s; RSS growth (both ends, one process) %.1f MB; max in flight %.1f MB",
                     mb, total, Double(mb) / total, Double(resumed.start) / 1_048_576, Double(resumed.bytes) / 1_048_576 / resumed.seconds, growth, inFlightMB))
        try? FileManager.default.removeItem(at: work)
    }

    /// Progress-aware deadline: a transfer that keeps moving is not cut even though it lasts
    /// well beyond the coordinator's idle timeout (heartbeats are paused to isolate the effect).
    func testMovingTransferOutlivesIdleTimeout() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let work = pki.dir.appendingPathComponent("slow")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let source = work.appendingPathComponent("u.bin")
        let digest = try makeObject(size: 2 << 20, at: source)
        let stored = NIOLockedValueBox<Double?>(nil)
        let server = try await RunningServer(pki.serverConfig(idle: .milliseconds(600), heartbeat: .seconds(30)),
                                             logger: logs.logger("coord")) { conn, status in
            guard case .objectOffer(let offer) = try await conn.receive() else { return }
            let stats = try await conn.receiveObject(offer, to: work.appendingPathComponent("got.bin"), maxSize: 4 << 20) { _, _ in
                try? await Task.sleep(for: .milliseconds(25))  // a slow disk: ~64 chunks × 25 ms ≈ 1.6 s in total
            }
            stored.withLockedValue { $0 = stats.seconds }
            try await drainSession(conn, status)
        }
        defer { Task { await server.stop() } }
        var cfg = pki.clientConfig(school: try pki.school("slow-school"), port: server.port)
        cfg.limits.chunkSize = 32 << 10
        let client = try SchoolClient(configuration: cfg, logger: logs.logger("school"))
        client._testingPauseHeartbeats.withLockedValue { $0 = true }
        try await client.withConnection { conn in
            try await conn.sendObject(id: "slow", kind: .update, file: source, sha256: digest)
        }
        // The school's send returns once the coordinator acknowledged the object, which can be
        // just before the coordinator's handler records its stats: wait for them (bounded).
        let deadline = ContinuousClock.now + .seconds(10)
        while stored.withLockedValue({ $0 }) == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let seconds = try XCTUnwrap(stored.withLockedValue { $0 }, "the coordinator never finished storing the object")
        XCTAssertGreaterThan(seconds, 1.0, "transfer should outlast the 0.6 s idle timeout")
        XCTAssertFalse(logs.contains("nothing received"))
    }

    /// Coordinator → school (global model download), and a corrupted object is refused.
    func testDownloadAndDigestMismatch() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let work = pki.dir.appendingPathComponent("dl")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let model = work.appendingPathComponent("global.safetensors")
        let digest = try makeObject(size: 3_000_000, at: model)
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord")) { conn, status in
            try await conn.sendObject(id: "global-v1", kind: .checkpoint, file: model, sha256: digest)
            // Lie about the digest: the school must refuse it.
            do {
                try await conn.sendObject(id: "global-v2", kind: .checkpoint, file: model, sha256: .of([UInt8]()))
                XCTFail("corrupt object accepted")
            } catch TransportError.transferFailed(let why) {
                XCTAssertTrue(why.contains("digest-mismatch"), why)
            }
            try await drainSession(conn, status)
        }
        defer { Task { await server.stop() } }
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("downloader"), port: server.port),
                                      logger: logs.logger("school"))
        try await client.withConnection { conn in
            guard case .objectOffer(let offer) = try await conn.receive() else { return XCTFail("offer expected") }
            let out = work.appendingPathComponent("got.safetensors")
            try Data("an older object that the commit replaces".utf8).write(to: out)
            let stats = try await conn.receiveObject(offer, to: out, maxSize: 8 << 20)
            XCTAssertEqual(stats.sha256, digest)
            XCTAssertEqual(try FileObjectSource(url: out).sha256(), digest)
            guard case .objectOffer(let bad) = try await conn.receive() else { return XCTFail("offer expected") }
            do {
                try await conn.receiveObject(bad, to: work.appendingPathComponent("bad.safetensors"), maxSize: 8 << 20)
                XCTFail("must refuse")
            } catch TransportError.transferFailed(let why) {
                XCTAssertTrue(why.contains("digest-mismatch"), why)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("bad.safetensors").path))
        }
    }

    /// A receiver left over from a dropped connection holds the partial file: a newer attempt
    /// waits for it instead of writing into the same file, then resumes from what it left.
    func testSecondReceiverWaitsForTheFirstThenResumes() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pando-sink-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let offer = ObjectOffer(id: "u", kind: .update, size: UInt64(bytes.count), sha256: .of(bytes))
        let dest = dir.appendingPathComponent("u.bin")
        let first = try FileObjectSink(destination: dest, offer: offer)
        try first.append(ByteBuffer(bytes: bytes[0..<4_000]))
        XCTAssertThrowsError(try FileObjectSink(destination: dest, offer: offer)) { XCTAssertTrue($0 is SinkBusy, "\($0)") }
        do {
            _ = try await PandoConnection.openSink(destination: dest, offer: offer, patience: .milliseconds(100))
            XCTFail("must give up while the first receiver holds the file")
        } catch TransportError.transferFailed(let why) {
            XCTAssertTrue(why.contains("earlier connection"), why)
        }
        let release = Task { try await Task.sleep(for: .milliseconds(100)); first.close() }
        let second = try await PandoConnection.openSink(destination: dest, offer: offer, patience: .seconds(5))
        defer { second.close() }
        _ = try await release.value
        XCTAssertEqual(second.offset, 4_000, "resumes from what the first receiver stored")
        try second.append(ByteBuffer(bytes: bytes[4_000...]))
        XCTAssertEqual(second.digest(), offer.sha256)
        try second.commit()
        XCTAssertEqual(try Data(contentsOf: dest), Data(bytes))
    }

    /// The school fetches a version named in an assignment by hash: an interrupted fetch
    /// resumes from its partial file; the coordinator serves from the requested offset.
    func testFetchByHashResumesFromThePartialFile() async throws {
        let pki = try TestPKI()
        let logs = LogCapture()
        let work = pki.dir.appendingPathComponent("fetch")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let model = work.appendingPathComponent("model.safetensors")
        let digest = try makeObject(size: 2_500_000, at: model)
        let ref = ObjectRef(id: "model-abc", size: 2_500_000, sha256: digest)
        let served = NIOLockedValueBox<[UInt64]>([])
        let server = try await RunningServer(pki.serverConfig(), logger: logs.logger("coord")) { conn, status in
            guard case .objectRequest(let request) = try await conn.receive() else { return XCTFail("request expected") }
            XCTAssertEqual(request.id, ref.id)
            served.withLockedValue { $0.append(request.offset) }
            try await conn.serveObject(request, file: model, sha256: digest)
            try await drainSession(conn, status)
        }
        defer { Task { await server.stop() } }
        // A previous attempt left the first 1,000,000 bytes.
        let out = work.appendingPathComponent("cache.safetensors")
        let prefix = try Data(contentsOf: model).prefix(1_000_000)
        try prefix.write(to: URL(fileURLWithPath: out.path + ".partial"))
        try Data("\(digest.hex) 2500000".utf8).write(to: URL(fileURLWithPath: out.path + ".partial.meta"))
        let client = try SchoolClient(configuration: pki.clientConfig(school: try pki.school("fetcher"), port: server.port),
                                      logger: logs.logger("school"))
        let stats = try await client.withConnection { conn in
            try await conn.fetchObject(ref, kind: .checkpoint, to: out, maxSize: 4 << 20)
        }
        XCTAssertEqual(served.withLockedValue { $0 }, [1_000_000])
        XCTAssertEqual(stats.startOffset, 1_000_000)
        XCTAssertEqual(try FileObjectSource(url: out).sha256(), digest)
        do {
            _ = try await client.withConnection { conn in
                try await conn.fetchObject(ref, kind: .checkpoint, to: out, maxSize: 1 << 20)
            }
            XCTFail("an object over maxSize must be refused")
        } catch TransportError.transferFailed(let why) {
            XCTAssertTrue(why.contains("over the limit"), why)
        }
    }
}
