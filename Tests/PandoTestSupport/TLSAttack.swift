import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// A hostile TLS peer for tests: any certificate chain, any key, no checks of its own.
public enum TLSAttack {
    /// A self-signed RSA certificate and key, made with the `openssl` command line
    /// (deploy/bootstrap installs it). BoringSSL accepts 1024-bit RSA; swift-certificates does not parse it.
    public static func rsaCertificate(bits: Int, in dir: URL, name: String) throws -> (certificate: URL, key: URL) {
        let cert = dir.appendingPathComponent("\(name).pem"), key = dir.appendingPathComponent("\(name)-key.pem")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = ["req", "-x509", "-newkey", "rsa:\(bits)", "-nodes", "-days", "2", "-subj", "/CN=\(name)",
                       "-keyout", key.path, "-out", cert.path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw AttackError("openssl req failed with status \(p.terminationStatus)") }
        return (cert, key)
    }

    /// DER bytes of the first certificate in a PEM file.
    public static func der(_ pem: URL) throws -> [UInt8] {
        try NIOSSLCertificate(file: pem.path, format: .pem).toDERBytes()
    }

    public enum Outcome: Sendable, Equatable {
        /// The peer answered `payload` with bytes (it accepted the session).
        case answered([UInt8])
        /// The connection ended or failed without an answer.
        case refused(String)
    }

    /// Dials `host:port` as a TLS client presenting `chain` (PEM files, in order) with `key`,
    /// trusting nothing, writes `payload` once TLS is up and waits up to `timeout` for any answer.
    public static func dial(host: String = "127.0.0.1", port: Int, chain: [URL], key: URL, payload: [UInt8],
                            timeout: TimeAmount = .seconds(5)) async throws -> Outcome {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        tls.certificateChain = try chain.map { .certificate(try NIOSSLCertificate(file: $0.path, format: .pem)) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key.path, format: .pem))
        let context = try NIOSSLContext(configuration: tls)
        let result = NIOLockedValueBox<Outcome?>(nil)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(5))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(Recorder(payload: payload, result: result))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            return .refused("connect: \(error)")
        }
        let deadline = NIODeadline.now() + timeout
        while NIODeadline.now() < deadline, result.withLockedValue({ $0 }) == nil, channel.isActive {
            try await Task.sleep(for: .milliseconds(20))
        }
        try? await channel.close()
        return result.withLockedValue { $0 } ?? .refused(channel.isActive ? "no answer within the timeout" : "closed by the peer")
    }

    private final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let payload: [UInt8]
        let result: NIOLockedValueBox<Outcome?>
        init(payload: [UInt8], result: NIOLockedValueBox<Outcome?>) {
            self.payload = payload
            self.result = result
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
                context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: payload)), promise: nil)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: unwrapInboundIn(data))
            result.withLockedValue { if $0 == nil { $0 = .answered(bytes) } }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            result.withLockedValue { if $0 == nil { $0 = .refused("\(error)") } }
            context.close(promise: nil)
        }
    }

    public struct AttackError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }
}
