import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PandoCertificates
@_exported import PandoTestSupport
@testable import PandoTransport
import PandoWire
import XCTest

/// A district CA in a temp dir with a coordinator certificate for `localhost`.
final class TestPKI: @unchecked Sendable {
    let dir: URL
    let ca: CertificateAuthority

    init(name: String = "Test District") throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("pando-pki-\(UUID().uuidString)")
        ca = try CertificateAuthority.initialise(at: dir, districtName: name)
        try ca.issueCoordinator(hosts: ["localhost", "127.0.0.1"])
    }

    func school(_ id: String, notBefore: Date? = nil, notAfter: Date? = nil) throws -> URL {
        try ca.issueSchool(id: id, notBefore: notBefore, notAfter: notAfter)
        return CertificateAuthority.schoolDirectory(dir, id: id)
    }

    func serverConfig(idle: TimeAmount = .seconds(10), heartbeat: TimeAmount = .milliseconds(200)) -> CoordinatorTransportConfiguration {
        var c = CoordinatorTransportConfiguration.fromCertificateFolder(dir.path, host: "127.0.0.1", port: 0)
        c.idleTimeout = idle
        c.heartbeatInterval = heartbeat
        c.handshakeTimeout = .seconds(5)
        return c
    }

    func clientConfig(school: URL, port: Int, serverName: String = "localhost") -> SchoolTransportConfiguration {
        var c = SchoolTransportConfiguration.fromSchoolFolder(school.path, coordinatorHost: "127.0.0.1", port: port)
        c.serverName = serverName
        c.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(400))
        c.connectTimeout = .seconds(5)
        return c
    }

    deinit { try? FileManager.default.removeItem(at: dir) }
}

/// Runs a coordinator in a background task; `stop()` cancels it.
final class RunningServer: @unchecked Sendable {
    let server: CoordinatorServer
    let task: Task<Void, Error>
    let port: Int

    init(_ config: CoordinatorTransportConfiguration, logger: Logger,
         session: @escaping @Sendable (PandoConnection, SessionStatus) async throws -> Void) async throws {
        let server = try CoordinatorServer(configuration: config, logger: logger)
        self.server = server
        let (stream, cont) = AsyncStream<Int>.makeStream()
        task = Task { try await server.run(onListening: { cont.yield($0); cont.finish() }, session: session) }
        var it = stream.makeAsyncIterator()
        guard let p = await it.next() else { throw TransportError.configuration("server did not start") }
        port = p
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

/// Session body for the coordinator: read until the connection ends.
@Sendable func drainSession(_ conn: PandoConnection, _ status: SessionStatus) async throws {
    while true { _ = try await conn.receive() }
}

/// Writes raw bytes under the frame encoder (straight into TLS) on an established connection.
func injectRaw(_ conn: PandoConnection, _ bytes: [UInt8]) async throws {
    let channel = conn.channel
    try await channel.eventLoop.flatSubmit {
        do {
            let ctx = try channel.pipeline.syncOperations.context(handlerType: MessageToByteHandler<WireFrameEncoder>.self)
            return ctx.writeAndFlush(NIOAny(channel.allocator.buffer(bytes: bytes)))
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }.get()
}

/// Waits until `conn`'s channel is closed (by the peer) or the timeout passes; true if closed.
func waitClosed(_ conn: PandoConnection, timeout: Double = 5) async -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while Date() < end {
        if !conn.channel.isActive { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return !conn.channel.isActive
}

func residentMB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    let kb = Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    return kb / 1024
}
