import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import PandoWire

/// Drops messages the peer may not send (a client sending `welcome`, …) as a protocol error.
final class DirectionGuard: ChannelInboundHandler, Sendable {
    typealias InboundIn = WireMessage
    typealias InboundOut = WireMessage
    let fromClient: Bool
    init(fromClient: Bool) { self.fromClient = fromClient }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let m = unwrapInboundIn(data)
        let ok = fromClient ? m.type.direction.clientMaySend : m.type.direction.coordinatorMaySend
        if ok { context.fireChannelRead(data) } else { context.fireErrorCaught(WireError.wrongDirection(type: m.type.name)) }
    }
}

/// Coordinator side: answers heartbeats in the pipeline (so a busy session task never
/// makes a healthy school look dead) and records the school's reported activity.
///
/// Hostile peers are bounded two ways: an ack is written only while the channel is
/// writable (a peer that never reads gets one coalesced ack for the newest heartbeat once
/// it drains, not a queue that grows), and heartbeats beyond ``HeartbeatRate`` close the
/// connection.
final class HeartbeatResponder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WireMessage
    typealias InboundOut = WireMessage
    typealias OutboundOut = WireMessage
    let status: SessionStatus
    private var rate: HeartbeatRate
    private var pendingAck: UInt64? = nil
    init(status: SessionStatus, rate: HeartbeatRate = HeartbeatRate()) {
        self.status = status
        self.rate = rate
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let m = unwrapInboundIn(data)
        if case .heartbeat(let h) = m {
            guard rate.admit(now: .now()) else {
                context.fireErrorCaught(TransportError.protocolViolation(
                    "heartbeat flood: more than \(rate.burst) heartbeats at over \(rate.perSecond) per second"))
                return
            }
            status.record(h)
            if context.channel.isWritable {
                context.writeAndFlush(wrapOutboundOut(.heartbeatAck(HeartbeatAck(sequence: h.sequence))), promise: nil)
            } else {
                pendingAck = h.sequence
            }
            return
        }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let seq = pendingAck {
            pendingAck = nil
            context.writeAndFlush(wrapOutboundOut(.heartbeatAck(HeartbeatAck(sequence: seq))), promise: nil)
        }
        context.fireChannelWritabilityChanged()
    }
}

/// Token bucket for heartbeats: `burst` at once, refilled at `perSecond`. Schools send one
/// every few seconds (10 s by default), so only a misbehaving peer ever reaches it.
struct HeartbeatRate: Sendable {
    var burst: Int = 100
    var perSecond: Int = 20
    private var tokens: Double = 100
    private var last: NIODeadline? = nil

    init(burst: Int = 100, perSecond: Int = 20) {
        self.burst = burst
        self.perSecond = perSecond
        tokens = Double(burst)
    }

    mutating func admit(now: NIODeadline) -> Bool {
        if let last {
            let elapsed = Double((now - last).nanoseconds) / 1e9
            tokens = min(Double(burst), tokens + elapsed * Double(perSecond))
        }
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

/// School side: consumes heartbeat acks in the pipeline so they never queue up behind a
/// session task that is busy (e.g. training) and stall reading.
final class HeartbeatAckConsumer: ChannelInboundHandler, Sendable {
    typealias InboundIn = WireMessage
    typealias InboundOut = WireMessage
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .heartbeatAck = unwrapInboundIn(data) { return }
        context.fireChannelRead(data)
    }
}

/// Closes the connection on the first error (decode error, TLS failure, idle timeout)
/// with a logged reason; other connections are unaffected.
final class CloseOnErrorHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WireMessage
    typealias InboundOut = WireMessage
    let logger: Logger
    let describe: @Sendable () -> String
    let idleTimeout: TimeAmount
    let onHandshakeFailure: (@Sendable (Error) -> Void)?
    /// Turns an error into the sentence logged; which end's fault a TLS error is depends on the side.
    let explain: @Sendable (Error) -> String
    private var closed = false

    /// With a limiter, lines are counted against the peer's address (`host`).
    let limiter: (PeerLogLimiter, host: String)?

    init(logger: Logger, idleTimeout: TimeAmount, onHandshakeFailure: (@Sendable (Error) -> Void)? = nil,
         explain: @escaping @Sendable (Error) -> String = { TLSFiles.explain($0) },
         limiter: (PeerLogLimiter, host: String)? = nil,
         describe: @escaping @Sendable () -> String) {
        self.logger = logger
        self.describe = describe
        self.idleTimeout = idleTimeout
        self.onHandshakeFailure = onHandshakeFailure
        self.explain = explain
        self.limiter = limiter
    }

    private func warn(_ message: String) {
        if let (limiter, host) = limiter {
            limiter.log(logger, .warning, host: host, message, metadata: ["peer": "\(describe())"])
        } else {
            logger.warning("\(message)", metadata: ["peer": "\(describe())"])
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let onHandshakeFailure, case NIOSSLError.handshakeFailed = error { onHandshakeFailure(error) }
        if !closed {
            closed = true
            let reason = TLSFiles.loggable((error as? WireError)?.description ?? explain(error))
            warn("closing connection: \(reason)")
            context.close(promise: nil)
        }
        context.fireErrorCaught(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? IdleStateHandler.IdleStateEvent, e == .read {
            if !closed {
                closed = true
                warn("closing connection: nothing received for \(idleTimeout.nanoseconds / 1_000_000) ms (no heartbeat, no data)")
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// What the coordinator knows about a live session (thread-safe).
public final class SessionStatus: @unchecked Sendable {
    private let lock = NIOLock()
    private var _lastHeartbeat: NIODeadline? = nil
    private var _activity: SchoolActivity = .idle
    private var _progress: Double? = nil
    private var _heartbeats: UInt64 = 0

    public init() {}

    func record(_ h: Heartbeat) {
        lock.withLock {
            _lastHeartbeat = .now()
            _activity = h.activity
            _progress = h.progress
            _heartbeats += 1
        }
    }

    public var activity: SchoolActivity { lock.withLock { _activity } }
    public var progress: Double? { lock.withLock { _progress } }
    public var heartbeatsReceived: UInt64 { lock.withLock { _heartbeats } }
    public var lastHeartbeat: NIODeadline? { lock.withLock { _lastHeartbeat } }
}

/// Passes outbound plaintext bytes to a closure on their way into TLS (see `SchoolClient.plaintextTap`).
final class PlaintextTap: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let tap: @Sendable (ByteBuffer) -> Void
    init(_ tap: @escaping @Sendable (ByteBuffer) -> Void) { self.tap = tap }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        tap(unwrapOutboundIn(data))
        context.write(data, promise: promise)
    }
}

/// At most `perMinute` log lines a minute about connections from one IP address, so a peer
/// that reconnects and misbehaves in a loop cannot flood the coordinator's log; the next line
/// let through says how many were left out.
final class PeerLogLimiter: @unchecked Sendable {
    private let lock = NIOLock()
    private let perMinute: Int
    private var windows: [String: (start: NIODeadline, lines: Int, suppressed: Int)] = [:]

    init(perMinute: Int = 30) { self.perMinute = perMinute }

    /// Whether a line about `host` may be logged now, and how many were suppressed before it.
    func admit(_ host: String, now: NIODeadline = .now()) -> (allowed: Bool, suppressed: Int) {
        lock.withLock {
            var w = windows[host] ?? (now, 0, 0)
            if now - w.start >= .seconds(60) { w = (now, 0, w.suppressed) }
            defer {
                windows[host] = w
                if windows.count > 10_000 { windows.removeAll(keepingCapacity: true) }  // bounded memory, O(1) amortised
            }
            guard w.lines < perMinute else {
                w.suppressed += 1
                return (false, 0)
            }
            w.lines += 1
            let suppressed = w.suppressed
            w.suppressed = 0
            return (true, suppressed)
        }
    }

    /// Logs `message` at `level` unless `host` is over its budget.
    func log(_ logger: Logger, _ level: Logger.Level, host: String, _ message: @autoclosure () -> String,
             metadata: Logger.Metadata = [:]) {
        let (allowed, suppressed) = admit(host)
        guard allowed else { return }
        var text = message()
        if suppressed > 0 { text += " (\(suppressed) earlier lines about \(host) left out)" }
        logger.log(level: level, "\(text)", metadata: metadata)
    }
}
