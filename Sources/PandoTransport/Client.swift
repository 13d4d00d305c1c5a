import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PandoCertificates
import PandoWire
import X509

/// A school's outbound connection to the coordinator (schools accept no inbound connections).
///
/// `run` keeps one connection: it dials, handshakes, runs your body, and after any failure
/// waits a jittered exponential backoff and dials again. Heartbeats carrying the school's
/// current ``SchoolActivity`` are sent in the background, so long local training is never
/// mistaken for a dead school.
public final class SchoolClient: Sendable {
    public let configuration: SchoolTransportConfiguration
    let logger: Logger
    let group: EventLoopGroup
    let sslContext: NIOSSLContext
    private let state = NIOLockedValueBox<(SchoolActivity, Double?)>((.idle, nil))
    private let counters = NIOLockedValueBox<(connects: Int, heartbeats: UInt64)>((0, 0))
    /// Tests only: stop sending heartbeats (to simulate a hung client).
    let _testingPauseHeartbeats = NIOLockedValueBox(false)
    /// Sees every plaintext byte this client writes to the connection, just before TLS
    /// encrypts it (for tests that prove what leaves a school). Set it before connecting.
    public let plaintextTap = NIOLockedValueBox<(@Sendable (ByteBuffer) -> Void)?>(nil)

    public init(configuration: SchoolTransportConfiguration, logger: Logger,
                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        self.configuration = configuration
        self.logger = logger
        self.group = group
        let cert = try TLSFiles.certificate(configuration.certificatePath, what: "school certificate")
        guard let own = try? Certificate(derEncoded: cert.toDERBytes()), let ownID = PandoIdentity.schoolID(of: own),
              let ownToken = WireToken(ownID) else {
            throw TransportError.configuration(
                "school certificate \(configuration.certificatePath) names no school (needs one SAN URI \(PandoIdentity.schoolURIPrefix)<ID>)")
        }
        schoolID = ownToken
        AllocatorPolicy.apply()
        let key = try TLSFiles.key(configuration.privateKeyPath, what: "school private key")
        let ca = try TLSFiles.certificate(configuration.caCertificatePath, what: "district CA certificate")
        var tls = TLSConfiguration.makeClientConfiguration()
        TLSPolicy.apply(to: &tls)
        tls.certificateVerification = .fullVerification  // our callback replaces the chain check; the host name is checked too
        tls.trustRoots = .certificates([ca])
        tls.certificateChain = [.certificate(cert)]
        tls.privateKey = .privateKey(key)
        sslContext = try NIOSSLContext(configuration: tls)
        let caCert = try Certificate(derEncoded: ca.toDERBytes())
        var revocation: RevocationListFile? = nil
        if let crl = configuration.revocationListPath {
            guard FileManager.default.fileExists(atPath: crl) else {
                throw TransportError.configuration(
                    "revocation list \(crl) does not exist; copy crl.pem from the district's certificate folder into the school bundle")
            }
            // A school cannot fetch a newer CRL itself: a stale one is still applied, with a warning.
            let file = RevocationListFile(path: crl, caCertificate: caCert, stalePolicy: .warn,
                                          numberFile: configuration.revocationNumberPath) { [logger] problem in
                logger.warning("\(problem)")
            }
            let (list, problem) = file.current()
            if list == nil { throw TransportError.configuration(problem ?? "revocation list \(crl) is unusable") }
            revocation = file
        } else {
            logger.warning("no revocation list configured: a revoked coordinator certificate would be accepted")
        }
        coordinatorValidator = CoordinatorCertificateValidator(caCertificate: caCert, revocation: revocation)
    }

    let coordinatorValidator: CoordinatorCertificateValidator
    /// This school's identity, read from its own certificate (never from what the coordinator says).
    public let schoolID: WireToken

    /// What heartbeats report from now on.
    public func setActivity(_ activity: SchoolActivity, progress: Double? = nil) {
        state.withLockedValue { $0 = (activity, progress) }
    }

    /// Successful handshakes so far.
    public var connectionCount: Int { counters.withLockedValue { $0.connects } }
    /// Heartbeats sent so far.
    public var heartbeatsSent: UInt64 { counters.withLockedValue { $0.heartbeats } }

    /// Keeps a connection until `body` returns normally (then returns) or the task is cancelled.
    /// Any error (refused, cut, timed out) is logged and followed by a backoff and a new attempt.
    /// `maxAttempts` bounds consecutive failed attempts (nil: forever).
    public func run(maxAttempts: Int? = nil, _ body: @escaping @Sendable (PandoConnection) async throws -> Void) async throws {
        var failures = 0
        while true {
            try Task.checkCancellation()
            var connected = false
            do {
                try await withConnection { conn in
                    connected = true
                    try await body(conn)
                }
                return
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                failures = connected ? 1 : failures + 1
                if let maxAttempts, failures >= maxAttempts { throw error }
                let delay = configuration.backoff.delay(attempt: failures)
                logger.warning("connection to coordinator failed: \(error); retrying in \(Self.format(delay))",
                               metadata: ["attempt": "\(failures)"])
                try await Task.sleep(for: delay)
            }
        }
    }

    /// One attempt: connect, mutual TLS, hello/welcome, heartbeats, then `body`. The connection closes when `body` ends.
    public func withConnection<T: Sendable>(_ body: (PandoConnection) async throws -> T) async throws -> T {
        let cfg = configuration
        let serverName = cfg.serverName ?? cfg.coordinatorHost
        let sniName: String? = Self.isIPAddress(serverName) ? nil : serverName
        let sslContext = self.sslContext
        let logger = self.logger
        let validator = coordinatorValidator
        let refusal = NIOLockedValueBox<String?>(nil)
        let channel: NIOAsyncChannel<WireMessage, WireMessage>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(cfg.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: cfg.coordinatorHost, port: cfg.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        // Our own strict check (exact name in a SAN) runs instead of BoringSSL's chain check;
                        // NIOSSL's host-name check then still runs as well.
                        // It sees the chain exactly as sent and judges its leaf, the key the handshake was signed with.
                        let verify: NIOSSLCustomVerificationCallback = { certs, promise in
                            if let problem = validator.problem(presented: certs.map { (try? $0.toDERBytes()) ?? [] }, serverName: serverName) {
                                refusal.withLockedValue { $0 = problem }
                                promise.succeed(.failed)
                            } else {
                                promise.succeed(.certificateVerified)
                            }
                        }
                        try sync.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: sniName,
                                                                customVerificationCallback: verify))
                        if let tap = self.plaintextTap.withLockedValue({ $0 }) { try sync.addHandler(PlaintextTap(tap)) }
                        try sync.addHandler(IdleStateHandler(readTimeout: cfg.idleTimeout))
                        try sync.addHandler(ByteToMessageHandler(WireFrameDecoder(limits: cfg.limits),
                                                                 maximumBufferSize: cfg.limits.maxFrameLength + 64))
                        try sync.addHandler(MessageToByteHandler(WireFrameEncoder(limits: cfg.limits)))
                        try sync.addHandler(DirectionGuard(fromClient: false))
                        try sync.addHandler(HeartbeatAckConsumer())
                        try sync.addHandler(CloseOnErrorHandler(logger: logger, idleTimeout: cfg.idleTimeout, onHandshakeFailure: { error in
                            // Keep the TLS reason, so the caller hears it rather than "connection closed".
                            refusal.withLockedValue { $0 = $0 ?? TLSFiles.explain(error, serverName: serverName) }
                        }) { "coordinator \(serverName)" })
                        return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel, configuration: WireLimits.asyncChannelConfiguration)
                    }
                }
        } catch {
            if let problem = refusal.withLockedValue({ $0 }) { throw TransportError.tls(problem) }
            throw TransportError.connectionClosed("cannot connect to \(cfg.coordinatorHost):\(cfg.port): \(error)")
        }
        return try await channel.executeThenClose { inbound, outbound in
            var it = inbound.makeAsyncIterator()
            let hello = Hello(protocolVersion: cfg.protocolVersion, softwareVersion: cfg.softwareVersion)
            let welcome: Welcome
            do {
                try await outbound.write(.hello(hello))
                guard let first = try await it.next() else {
                    throw TransportError.connectionClosed(
                        "the coordinator closed the connection during the handshake (it may have refused this school's certificate; its log names the reason)")
                }
                switch first {
                case .welcome(let w): welcome = w
                case .reject(let r): throw TransportError.rejected(r)
                default: throw TransportError.protocolViolation("expected welcome, got \(first.type.name)")
                }
            } catch var e as TransportError {
                if let problem = refusal.withLockedValue({ $0 }) { e = .tls(problem) }
                logger.error("handshake failed: \(e)")
                throw e
            } catch let e as WireError {
                throw TransportError.protocolViolation(e.description)
            } catch {
                let e = TransportError.tls(refusal.withLockedValue { $0 } ?? TLSFiles.explain(error, serverName: serverName))
                logger.error("handshake failed: \(e)")
                throw e
            }
            guard welcome.schoolID == schoolID else {
                throw TransportError.protocolViolation(
                    "the coordinator addressed this school as \(welcome.schoolID), but its certificate says \(schoolID)")
            }
            guard welcome.protocolVersion == cfg.protocolVersion else {
                throw TransportError.protocolVersionMismatch(local: cfg.protocolVersion, remote: welcome.protocolVersion)
            }
            counters.withLockedValue { $0.connects += 1 }
            logger.info("connected to coordinator", metadata: [
                "school": "\(schoolID)", "coordinator": "\(serverName)", "software": "\(welcome.softwareVersion)",
            ])
            let conn = PandoConnection(schoolID: schoolID, certificateSerial: "", capabilities: welcome.capabilities,
                                       remoteAddress: serverName, limits: cfg.limits,
                                       peerMaxFrameLength: Int(welcome.maxFrameLength), channel: channel.channel,
                                       inbound: it, outbound: outbound, swallow: [.heartbeatAck])
            let interval = welcome.heartbeatIntervalMillis > 0
                ? Duration.milliseconds(Int64(welcome.heartbeatIntervalMillis)) : Duration.nanoseconds(cfg.heartbeatInterval.nanoseconds)
            let heartbeats = Task {
                var seq: UInt64 = 0
                while !Task.isCancelled {
                    if self._testingPauseHeartbeats.withLockedValue({ $0 }) {
                        try? await Task.sleep(for: interval)
                        continue
                    }
                    let (activity, progress) = self.state.withLockedValue { $0 }
                    seq += 1
                    do { try await outbound.write(.heartbeat(Heartbeat(sequence: seq, activity: activity, progress: progress))) } catch { return }
                    self.counters.withLockedValue { $0.heartbeats += 1 }
                    try? await Task.sleep(for: interval)
                }
            }
            defer { heartbeats.cancel() }
            return try await body(conn)
        }
    }

    static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    static func format(_ d: Duration) -> String {
        String(format: "%.2fs", Backoff.seconds(d))
    }
}
