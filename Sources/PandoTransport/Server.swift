import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PandoCertificates
import PandoWire
import X509

/// The coordinator's listener: mutual TLS, one session per school.
///
/// Each accepted connection must complete TLS with a school certificate that
/// ``SchoolCertificateValidator`` accepts (district CA, validity, clientAuth, SAN URI,
/// CRL — re-read when `crl.pem` changes), then send `hello`. The school's identity is
/// the `pando://school/<ID>` SAN of its certificate. A newer session for a school
/// replaces its older one.
///
/// TLS 1.3 only, and only P-256 ECDSA signatures are accepted in the handshake: `pando certs`
/// issues nothing else, and every TLS 1.3 client Pando ships or supports speaks it, so older
/// versions and other algorithms would only widen what an attacker can try.
public final class CoordinatorServer: Sendable {
    public let configuration: CoordinatorTransportConfiguration
    let logger: Logger
    let group: EventLoopGroup
    let sslContext: NIOSSLContext
    let validator: SchoolCertificateValidator
    private let registry = SessionRegistry()
    private let admission: Admission
    /// Lines about connections, budgeted per address.
    let peerLog = PeerLogLimiter()
    private let boundPort = NIOLockedValueBox<Int?>(nil)
    /// Called for every connection refused during TLS (certificate refused, or the handshake
    /// failed before a certificate could be judged), e.g. to audit it. Called on an event loop:
    /// keep it short.
    let onRefusal: @Sendable (ConnectionRefusal) -> Void

    public init(configuration: CoordinatorTransportConfiguration, logger: Logger,
                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                onRefusal: @escaping @Sendable (ConnectionRefusal) -> Void = { _ in }) throws {
        self.configuration = configuration
        self.logger = logger
        self.group = group
        self.onRefusal = onRefusal
        admission = Admission(maxSessions: configuration.maxConnections, maxPending: configuration.maxPendingHandshakes,
                              maxPendingPerAddress: configuration.maxPendingHandshakesPerAddress)
        AllocatorPolicy.apply()
        let cert = try TLSFiles.certificate(configuration.certificatePath, what: "coordinator certificate")
        let key = try TLSFiles.key(configuration.privateKeyPath, what: "coordinator private key")
        let ca = try TLSFiles.certificate(configuration.caCertificatePath, what: "district CA certificate")
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(cert)], privateKey: .privateKey(key))
        TLSPolicy.apply(to: &tls)
        tls.certificateVerification = .noHostnameVerification  // client certificate required; our callback judges it
        tls.trustRoots = .certificates([ca])
        sslContext = try NIOSSLContext(configuration: tls)
        let caCert = try Certificate(derEncoded: ca.toDERBytes())
        validator = SchoolCertificateValidator(
            caCertificate: caCert,
            revocation: RevocationListFile(path: configuration.revocationListPath, caCertificate: caCert, stalePolicy: .refuse,
                                           numberFile: configuration.revocationNumberPath) {
                [logger] problem in logger.error("\(problem)")
            })
        guard FileManager.default.fileExists(atPath: configuration.revocationListPath) else {
            throw TransportError.configuration("revocation list \(configuration.revocationListPath) does not exist (run `pando certs init`)")
        }
        _ = validator.revocation?.current()  // report a rejected, stale or nearly stale CRL at start-up, not at the first handshake
    }

    /// Port actually bound (useful with port 0), once listening.
    public var port: Int? { boundPort.withLockedValue { $0 } }
    /// Schools with a live session.
    public var connectedSchools: [WireToken] { registry.schools }
    /// Status of a school's live session.
    public func status(of school: WireToken) -> SessionStatus? { registry.status(school) }

    /// Why `school`'s certificate is not acceptable *now* (revoked since it connected, expired,
    /// or the CRL cannot be checked), or `nil` if it still is. A school without a live
    /// session has nothing to check and gets a reason too.
    public func credentialProblem(of school: WireToken, now: Date = Date()) -> String? {
        guard let entry = registry.entry(school) else { return "school \(school) has no live session" }
        guard let leaf = entry.leaf else { return "school \(school)'s session has no verified certificate" }
        return validator.validate(leaf: leaf, now: now).reason
    }

    /// Re-checks every live session's certificate; closes those no longer acceptable and
    /// reports each (with its school) to `onRefusal`. Runs every `revalidationInterval`
    /// while listening, so a revocation (the CRL file changing) or an expiry ends a live
    /// session within that time, not at its next handshake.
    func revalidateSessions(now: Date = Date()) {
        for (school, entry) in registry.all {
            guard let problem = entry.leaf.map({ validator.validate(leaf: $0, now: now) }) ?? .rejected(
                PeerRefusal(kind: .noCertificate, reason: "the session has no verified certificate")) as PeerValidation?,
                  case .rejected(let refusal) = problem else { continue }
            logger.warning("closing the session of school \(school): \(refusal.reason)", metadata: ["peer": "\(entry.address)"])
            registry.unregister(school, channel: entry.channel)
            entry.channel.close(promise: nil)
            onRefusal(ConnectionRefusal(address: entry.address, refusal: refusal, school: school.value))
        }
    }

    private struct Child: Sendable {
        let channel: NIOAsyncChannel<WireMessage, WireMessage>
        let peer: PeerBox
        let status: SessionStatus
        /// Over the pending-handshake cap for its address: closed at once by `handle`, nothing served.
        let refused: Bool
        /// The peer's IP address, the unit of the per-address caps and log budget.
        let host: String
    }

    /// Listens until the task is cancelled, running `session` for every authenticated school.
    /// `session` returning or throwing closes that connection only.
    public func run(onListening: @Sendable (Int) -> Void = { _ in },
                    session: @escaping @Sendable (PandoConnection, SessionStatus) async throws -> Void) async throws {
        let cfg = configuration
        let logger = self.logger
        let sslContext = self.sslContext
        let validator = self.validator
        let admission = self.admission
        let onRefusal = self.onRefusal
        let peerLog = self.peerLog
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: cfg.host, port: cfg.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let peer = PeerBox(address: channel.remoteAddress.map { "\($0)" } ?? "?")
                    let status = SessionStatus()
                    // The callback replaces BoringSSL's chain check: it sees the chain exactly as sent,
                    // leaf first, and judges that leaf (the key BoringSSL checks the handshake against).
                    let verify: NIOSSLCustomVerificationCallback = { certs, promise in
                        let presented = certs.map { (try? $0.toDERBytes()) ?? [] }
                        switch validator.validate(presented: presented) {
                        case .accepted(let id, let serial):
                            if case .success(let leaf) = PeerLeaf.parse(presented, role: "school") { peer.leaf = leaf }
                            peer.set(school: id, serial: serial)
                            promise.succeed(.certificateVerified)
                        case .rejected(let refusal):
                            peerLog.log(logger, .warning, host: hostOf(channel.remoteAddress),
                                        "refused a school's client certificate: \(refusal.reason)", metadata: ["peer": "\(peer.address)"])
                            peer.rejected = true
                            onRefusal(ConnectionRefusal(address: peer.address, refusal: refusal))
                            promise.succeed(.failed)
                        }
                    }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: sslContext, customVerificationCallback: verify))
                    try sync.addHandler(IdleStateHandler(readTimeout: cfg.idleTimeout))
                    try sync.addHandler(ByteToMessageHandler(WireFrameDecoder(limits: cfg.limits),
                                                             maximumBufferSize: cfg.limits.maxFrameLength + 64))
                    try sync.addHandler(MessageToByteHandler(WireFrameEncoder(limits: cfg.limits)))
                    try sync.addHandler(DirectionGuard(fromClient: true))
                    try sync.addHandler(HeartbeatResponder(status: status))
                    try sync.addHandler(CloseOnErrorHandler(logger: logger, idleTimeout: cfg.idleTimeout, onHandshakeFailure: { error in
                        // A handshake that failed before our callback judged a certificate (no common
                        // TLS version or signature algorithm, a bad CertificateVerify …).
                        guard peer.identity == nil, !peer.rejected else { return }
                        peer.rejected = true
                        onRefusal(ConnectionRefusal(address: peer.address, refusal: PeerRefusal(
                            kind: .tlsHandshake, reason: "TLS handshake with a client failed: \(TLSFiles.loggable(TLSFiles.describeHandshakeFailure(error)))")))
                    }, explain: { error in
                        guard case NIOSSLError.handshakeFailed = error else { return TLSFiles.explain(error) }
                        return TLSFiles.describeHandshakeFailure(error)
                    }, limiter: (peerLog, hostOf(channel.remoteAddress))) { peer.describe })
                    let async = try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel, configuration: WireLimits.asyncChannelConfiguration)
                    let host = hostOf(channel.remoteAddress)
                    switch admission.enter(channel, address: host) {
                    case .admitted(let victim):
                        channel.closeFuture.whenComplete { _ in admission.leave(channel) }
                        if let victim {
                            logger.notice("closing the oldest unauthenticated connection to make room (\(cfg.maxPendingHandshakes) handshakes pending)",
                                          metadata: ["peer": "\(victim.remoteAddress.map { "\($0)" } ?? "?")"])
                            victim.close(promise: nil)
                        }
                        return Child(channel: async, peer: peer, status: status, refused: false, host: host)
                    case .refused(let log):
                        if log {
                            logger.warning("refusing connections from \(host): \(cfg.maxPendingHandshakesPerAddress) handshakes already pending from it",
                                           metadata: ["peer": "\(peer.address)", "refusedSoFar": "\(admission.refusedCount)"])
                        }
                        return Child(channel: async, peer: peer, status: status, refused: true, host: host)
                    }
                }
            }
        let port = server.channel.localAddress?.port ?? cfg.port
        boundPort.withLockedValue { $0 = port }
        logger.info("coordinator listening", metadata: ["port": "\(port)", "tls": "mutual, TLS 1.3, P-256 ECDSA"])
        onListening(port)
        let interval = Duration.nanoseconds(cfg.revalidationInterval.nanoseconds)
        let revalidation = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                self?.revalidateSessions()
            }
        }
        defer { revalidation.cancel() }
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await child in inbound {
                    group.addTask { await self.handle(child, session: session) }
                }
            }
        }
    }

    private func handle(_ child: Child, session: @escaping @Sendable (PandoConnection, SessionStatus) async throws -> Void) async {
        let cfg = configuration
        let admission = self.admission
        let channel = child.channel.channel
        if child.refused {
            channel.close(promise: nil)
            try? await child.channel.executeThenClose { _, _ in }
            return
        }
        let timeout = channel.eventLoop.scheduleTask(in: cfg.handshakeTimeout) {
            self.peerLog.log(self.logger, .warning, host: child.host, "closing connection: no hello within the handshake timeout",
                             metadata: ["peer": "\(child.peer.describe)"])
            channel.close(promise: nil)
        }
        var schoolForLog = "?"
        do {
            try await child.channel.executeThenClose { inbound, outbound in
                var it = inbound.makeAsyncIterator()
                let first = try await it.next()
                timeout.cancel()
                guard let first else { throw TransportError.connectionClosed("before hello") }
                guard let (id, serial) = child.peer.identity, let school = WireToken(id) else {
                    throw TransportError.tls("no verified school identity")
                }
                schoolForLog = id
                guard case .hello(let hello) = first else {
                    let r = Reject(code: .handshakeExpected, reason: "the first message must be hello, got \(first.type.name)")
                    try? await outbound.write(.reject(r))
                    throw TransportError.protocolViolation(r.reason)
                }
                switch Handshake.evaluate(hello, schoolID: school, softwareVersion: cfg.softwareVersion,
                                          supportedVersions: cfg.supportedProtocolVersions,
                                          heartbeatIntervalMillis: UInt32(clamping: cfg.heartbeatInterval.nanoseconds / 1_000_000),
                                          idleTimeoutMillis: UInt32(clamping: cfg.idleTimeout.nanoseconds / 1_000_000),
                                          limits: cfg.limits) {
                case .failure(let reject):
                    self.peerLog.log(self.logger, .warning, host: child.host, "rejected school \(id): \(reject.reason)",
                                     metadata: ["peer": "\(child.peer.address)"])
                    try? await outbound.write(.reject(reject))
                    return
                case .success(let welcome):
                    let (room, logRefusal) = admission.promote(channel)
                    guard room else {
                        if logRefusal {
                            self.logger.warning("refusing connections: \(cfg.maxConnections) connections open (maxConnections)",
                                                metadata: ["peer": "\(child.peer.describe)", "refusedSoFar": "\(admission.refusedCount)"])
                        }
                        try? await outbound.write(.reject(Reject(code: .busy, reason: "the coordinator has \(cfg.maxConnections) schools connected, its limit; try again later")))
                        return
                    }
                    try await outbound.write(.welcome(welcome))
                    self.peerLog.log(self.logger, .info, host: child.host, "school connected", metadata: [
                        "school": "\(id)", "serial": "\(serial)", "peer": "\(child.peer.address)",
                        "software": "\(hello.softwareVersion)", "protocol": "\(hello.protocolVersion)",
                    ])
                    let conn = PandoConnection(schoolID: school, certificateSerial: serial, capabilities: welcome.capabilities,
                                               remoteAddress: child.peer.address, limits: cfg.limits, channel: channel,
                                               inbound: it, outbound: outbound, swallow: [])
                    if let old = self.registry.register(school, channel: channel, status: child.status, leaf: child.peer.leaf,
                                                        address: child.peer.address) {
                        self.logger.notice("replacing older session of school \(id)")
                        old.close(promise: nil)
                    }
                    defer { self.registry.unregister(school, channel: channel) }
                    try await session(conn, child.status)
                }
            }
        } catch {
            timeout.cancel()
            if child.peer.rejected { return }  // reason already logged by the verifier
            let reason = TLSFiles.loggable(
                (error as? WireError)?.description ?? (error as? TransportError)?.description ?? TLSFiles.explain(error))
            peerLog.log(logger, .info, host: child.host, "session ended: \(reason)",
                        metadata: ["school": "\(schoolForLog)", "peer": "\(child.peer.address)"])
        }
    }
}

/// A connection the coordinator refused during TLS: who (address only: no identity was
/// established) and why.
public struct ConnectionRefusal: Sendable, Equatable {
    public var address: String
    public var refusal: PeerRefusal
    /// The school whose live session was closed (revoked or expired since it connected); `nil`
    /// for a handshake that never established an identity.
    public var school: String?
    public init(address: String, refusal: PeerRefusal, school: String? = nil) {
        self.address = address
        self.refusal = refusal
        self.school = school
    }
}

/// Admission control in two pools, so connections that never authenticate cannot lock out
/// schools that do.
///
/// - *Pending*: accepted, TLS and `hello` not yet done (at most `handshakeTimeout`). At most
///   `maxPendingPerAddress` from one address (more are closed at accept) and
///   `maxPendingHandshakes` in all; when that is full the *oldest* pending connection is
///   closed to make room, so a flood can delay a school's handshake but never block it.
/// - *Sessions*: schools that completed `hello`, at most `maxConnections`.
final class Admission: @unchecked Sendable {
    private let lock = NIOLock()
    let maxSessions: Int
    let maxPending: Int
    let maxPendingPerAddress: Int
    private var pending: [ObjectIdentifier: (channel: Channel, address: String, since: NIODeadline)] = [:]
    private var pendingByAddress: [String: Int] = [:]
    private var sessions = 0
    private var sessionIDs: Set<ObjectIdentifier> = []
    private var refused = 0
    private var evicted = 0
    private var lastLogged: NIODeadline? = nil

    init(maxSessions: Int, maxPending: Int, maxPendingPerAddress: Int) {
        self.maxSessions = maxSessions
        self.maxPending = max(1, maxPending)
        self.maxPendingPerAddress = max(1, maxPendingPerAddress)
    }

    enum Entry { case admitted(evicting: Channel?), refused(log: Bool) }

    /// A new connection from `address` (the host, without port).
    func enter(_ channel: Channel, address: String) -> Entry {
        lock.withLock {
            if pendingByAddress[address, default: 0] >= maxPendingPerAddress {
                refused += 1
                return .refused(log: shouldLog())
            }
            var victim: Channel? = nil
            if pending.count >= maxPending, let oldest = pending.min(by: { $0.value.since < $1.value.since }) {
                victim = oldest.value.channel
                drop(oldest.key)
                evicted += 1
            }
            pending[ObjectIdentifier(channel)] = (channel, address, .now())
            pendingByAddress[address, default: 0] += 1
            return .admitted(evicting: victim)
        }
    }

    /// The connection completed `hello`: it becomes a session if there is room. A connection
    /// that already closed (or was evicted) is not pending any more and never becomes one, so
    /// a close racing the `hello` cannot leak a session slot.
    func promote(_ channel: Channel) -> (Bool, log: Bool) {
        lock.withLock {
            let id = ObjectIdentifier(channel)
            guard pending[id] != nil else { return (false, false) }
            drop(id)
            guard sessions < maxSessions else {
                refused += 1
                return (false, shouldLog())
            }
            sessions += 1
            sessionIDs.insert(id)
            return (true, false)
        }
    }

    /// The connection closed: it leaves whichever pool holds it.
    func leave(_ channel: Channel) {
        lock.withLock {
            let id = ObjectIdentifier(channel)
            drop(id)
            if sessionIDs.remove(id) != nil { sessions -= 1 }
        }
    }

    private func drop(_ id: ObjectIdentifier) {
        guard let entry = pending.removeValue(forKey: id) else { return }
        let n = pendingByAddress[entry.address, default: 1] - 1
        pendingByAddress[entry.address] = n > 0 ? n : nil
    }

    /// At most one log line a second about refusals.
    private func shouldLog() -> Bool {
        let now = NIODeadline.now()
        if let last = lastLogged, now - last < .seconds(1) { return false }
        lastLogged = now
        return true
    }

    var refusedCount: Int { lock.withLock { refused } }
    var sessionCount: Int { lock.withLock { sessions } }
    var pendingCount: Int { lock.withLock { pending.count } }
}

/// The host part of a socket address, the unit the pending-handshake cap counts by.
func hostOf(_ address: SocketAddress?) -> String {
    address?.ipAddress ?? "unknown"
}

/// Identity the TLS verifier established for one connection.
final class PeerBox: @unchecked Sendable {
    let address: String
    private let lock = NIOLock()
    private var _identity: (String, String)?
    private var _rejected = false
    private var _leaf: Certificate?
    init(address: String) { self.address = address }
    /// The certificate that was verified, kept to re-check revocation and expiry during the session.
    var leaf: Certificate? {
        get { lock.withLock { _leaf } }
        set { lock.withLock { _leaf = newValue } }
    }

    func set(school: String, serial: String) { lock.withLock { _identity = (school, serial) } }
    var identity: (String, String)? { lock.withLock { _identity } }
    var rejected: Bool {
        get { lock.withLock { _rejected } }
        set { lock.withLock { _rejected = newValue } }
    }
    var describe: String { identity.map { "\($0.0)@\(address)" } ?? address }
}

final class SessionRegistry: @unchecked Sendable {
    struct Entry {
        let channel: Channel
        let status: SessionStatus
        let leaf: Certificate?
        let address: String
    }
    private let lock = NIOLock()
    private var sessions: [WireToken: Entry] = [:]

    func register(_ school: WireToken, channel: Channel, status: SessionStatus, leaf: Certificate?, address: String) -> Channel? {
        lock.withLock {
            let old = sessions[school]?.channel
            sessions[school] = Entry(channel: channel, status: status, leaf: leaf, address: address)
            return old
        }
    }

    func unregister(_ school: WireToken, channel: Channel) {
        lock.withLock {
            if let c = sessions[school]?.channel, c === channel { sessions[school] = nil }
        }
    }

    var schools: [WireToken] { lock.withLock { sessions.keys.sorted() } }
    var all: [(WireToken, Entry)] { lock.withLock { sessions.map { ($0.key, $0.value) } } }
    func status(_ school: WireToken) -> SessionStatus? { lock.withLock { sessions[school]?.status } }
    func entry(_ school: WireToken) -> Entry? { lock.withLock { sessions[school] } }
}
