import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PandoWire

/// One established, authenticated session (either end).
///
/// `receive()` must be called from one task at a time; `send` may be called from any task.
/// Heartbeats are handled for you on both ends.
public final class PandoConnection: @unchecked Sendable {
    /// The school at the other end (coordinator side) or this school (client side), from the certificate.
    public let schoolID: WireToken
    /// Serial (hex) of the school's certificate.
    public let certificateSerial: String
    /// Capabilities both ends share.
    public let capabilities: [WireToken]
    public let remoteAddress: String
    public let limits: WireLimits
    /// The peer's largest accepted frame, when it announced one (the coordinator does, in `welcome`).
    public let peerMaxFrameLength: Int?

    let channel: Channel
    private var inbound: NIOAsyncChannelInboundStream<WireMessage>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<WireMessage>
    /// Messages swallowed by `receive()` (heartbeat acks on the client).
    private let swallow: Set<MessageType>
    /// Messages that arrived during an object transfer but belong to the conversation around
    /// it (a coordinator re-sending an assignment while the school re-offers its update);
    /// `receive()` returns them, in order, once the transfer is over.
    private var deferred: [WireMessage] = []
    /// More deferred messages than this during one transfer is a protocol violation.
    static let maxDeferred = 16
    /// Set when the stall watchdog closed the connection, so the error says so.
    private let stalled = NIOLockedValueBox(false)

    init(schoolID: WireToken, certificateSerial: String, capabilities: [WireToken], remoteAddress: String,
         limits: WireLimits, peerMaxFrameLength: Int? = nil, channel: Channel, inbound: NIOAsyncChannelInboundStream<WireMessage>.AsyncIterator,
         outbound: NIOAsyncChannelOutboundWriter<WireMessage>, swallow: Set<MessageType>) {
        self.schoolID = schoolID
        self.certificateSerial = certificateSerial
        self.capabilities = capabilities
        self.remoteAddress = remoteAddress
        self.limits = limits
        self.peerMaxFrameLength = peerMaxFrameLength
        self.channel = channel
        self.inbound = inbound
        self.outbound = outbound
        self.swallow = swallow
    }

    /// Sends one message (waits while the socket is not writable: bounded memory).
    public func send(_ message: WireMessage) async throws {
        do { try await outbound.write(message) } catch {
            throw TransportError.connectionClosed("while sending \(message.type.name): \(error)")
        }
    }

    /// Next application message, or throws when the connection ends.
    public func receive() async throws -> WireMessage {
        if !deferred.isEmpty { return deferred.removeFirst() }
        return try await receiveFromPeer()
    }

    /// Runs one step of a transfer under the stall watchdog: if it takes longer than
    /// `limits.transferStallSeconds` the connection is closed and the step fails saying so.
    private func progressing<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        let channel = self.channel, stalled = self.stalled
        let timeout = TimeAmount.nanoseconds(Int64(limits.transferStallSeconds * 1e9))
        let watchdog = channel.eventLoop.scheduleTask(in: timeout) {
            stalled.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        defer { watchdog.cancel() }
        do { return try await body() } catch {
            if stalled.withLockedValue({ $0 }) {
                throw TransportError.transferFailed("transfer stalled: no progress \(what) for \(limits.transferStallSeconds) s; connection closed")
            }
            throw error
        }
    }

    /// Next message of an object transfer (offer, request, chunk, complete, receipt); any
    /// other message is kept for `receive()`. Fails if none comes within the stall timeout.
    private func receiveForTransfer() async throws -> WireMessage {
        try await progressing("from the peer") { try await nextTransferMessage() }
    }

    private func nextTransferMessage() async throws -> WireMessage {
        while true {
            let m = try await receiveFromPeer()
            switch m {
            case .objectOffer, .objectRequest, .objectChunk, .objectComplete, .objectReceipt:
                return m
            default:
                guard deferred.count < Self.maxDeferred else {
                    throw TransportError.protocolViolation("\(deferred.count + 1) messages interleaved with an object transfer")
                }
                deferred.append(m)
            }
        }
    }

    private func receiveFromPeer() async throws -> WireMessage {
        while true {
            let next: WireMessage?
            do { next = try await inbound.next() } catch let e as WireError {
                throw TransportError.protocolViolation(e.description)
            } catch {
                throw TransportError.connectionClosed(TLSFiles.explain(error))
            }
            guard let m = next else { throw TransportError.connectionClosed("the peer closed the connection") }
            if swallow.contains(m.type) { continue }
            if case .goodbye(let g) = m { throw TransportError.connectionClosed("peer said goodbye (\(g.code.rawValue))") }
            return m
        }
    }

    /// Closes the connection (the peer sees EOF).
    public func close() {
        channel.close(promise: nil)
    }

    // MARK: Object transfer

    /// Statistics of one transfer.
    public struct TransferStats: Sendable, Equatable {
        /// Offset the transfer started from (non-zero when resumed).
        public var startOffset: UInt64
        /// Bytes carried by this connection.
        public var bytesTransferred: UInt64
        public var size: UInt64
        public var sha256: ObjectDigest
        public var seconds: Double
    }

    /// Sends the file at `file` as object `id`: offer → (peer's request from offset) → chunks → complete → receipt.
    /// Memory stays bounded (one chunk at a time, waits for writability). If the peer
    /// already holds a prefix from an interrupted attempt it asks for the rest only.
    @discardableResult
    public func sendObject(id: WireToken, kind: ObjectKind, file: URL, sha256 known: ObjectDigest? = nil,
                           progress: (@Sendable (UInt64, UInt64) async -> Void)? = nil) async throws -> TransferStats {
        let started = ContinuousClock.now
        let source = try FileObjectSource(url: file)
        defer { source.close() }
        let digest = try known ?? source.sha256()
        try await send(.objectOffer(ObjectOffer(id: id, kind: kind, size: source.size, sha256: digest)))
        let request = try await receiveForTransfer()
        guard case .objectRequest(let req) = request, req.id == id else {
            if case .objectReceipt(let r) = request, r.id == id, r.status == .refused {
                throw TransportError.transferFailed("peer refused object \(id)")
            }
            throw TransportError.protocolViolation("expected objectRequest for \(id), got \(request.type.name)")
        }
        let stats = try await stream(source, id: id, digest: digest, from: req.offset, progress: progress)
        return TransferStats(startOffset: req.offset, bytesTransferred: stats, size: source.size,
                             sha256: digest, seconds: Self.seconds(since: started))
    }

    /// Answers a peer's unsolicited `objectRequest` for `file` (object `request.id`, whose
    /// SHA-256 is `sha256`): chunks from the requested offset → complete → receipt.
    /// This is how a school fetches a global version named in its `roundAssignment`.
    @discardableResult
    public func serveObject(_ request: ObjectRequest, file: URL, sha256: ObjectDigest,
                            progress: (@Sendable (UInt64, UInt64) async -> Void)? = nil) async throws -> TransferStats {
        let started = ContinuousClock.now
        let source = try FileObjectSource(url: file)
        defer { source.close() }
        let sent = try await stream(source, id: request.id, digest: sha256, from: request.offset, progress: progress)
        return TransferStats(startOffset: request.offset, bytesTransferred: sent, size: source.size,
                             sha256: sha256, seconds: Self.seconds(since: started))
    }

    /// Chunks from `start`, then `objectComplete`, then waits for a `stored` receipt; returns the bytes sent.
    private func stream(_ source: FileObjectSource, id: WireToken, digest: ObjectDigest, from start: UInt64,
                        progress: (@Sendable (UInt64, UInt64) async -> Void)?) async throws -> UInt64 {
        guard start <= source.size else {
            throw TransportError.protocolViolation("peer asked for offset \(start) beyond size \(source.size)")
        }
        var offset = start
        let chunk = Self.chunkLength(chunkSize: limits.chunkSize, ownMaxFrame: limits.maxFrameLength,
                                     peerMaxFrame: peerMaxFrameLength, idLength: id.value.utf8.count)
        while offset < source.size {
            let n = Int(min(UInt64(chunk), source.size - offset))
            let data = try source.read(offset: offset, count: n, allocator: channel.allocator)
            // A peer that stops reading leaves this write waiting for writability: bounded too.
            try await progressing("sending to the peer") { try await send(.objectChunk(ObjectChunk(id: id, offset: offset, data: data))) }
            offset += UInt64(n)
            await progress?(offset, source.size)
        }
        try await send(.objectComplete(ObjectComplete(id: id, sha256: digest)))
        let answer = try await receiveForTransfer()
        guard case .objectReceipt(let receipt) = answer, receipt.id == id else {
            throw TransportError.protocolViolation("expected objectReceipt for \(id), got \(answer.type.name)")
        }
        guard receipt.status == .stored else {
            throw TransportError.transferFailed("peer reported \(receipt.status.rawValue) for object \(id)")
        }
        return source.size - start
    }

    /// Data bytes per chunk: the configured chunk size, shrunk so the whole frame (type byte,
    /// id length, id, offset, data) fits both this side's and the peer's frame limit; at least 1.
    static func chunkLength(chunkSize: Int, ownMaxFrame: Int, peerMaxFrame: Int?, idLength: Int) -> Int {
        let frameLimit = min(ownMaxFrame, peerMaxFrame ?? Int.max)
        let header = 1 + 1 + max(0, min(idLength, 255)) + 8
        let room = frameLimit > header ? frameLimit - header : 0  // never negative, never overflows
        return max(1, min(chunkSize, room))
    }

    /// Receives the object announced by `offer` into `destination` (replaced atomically on success).
    ///
    /// An offer larger than `maxSize` bytes is refused (the sender gets a `refused` receipt)
    /// before anything is written, so a peer cannot fill the disk: pass the largest object you expect.
    ///
    /// Bytes are appended to `destination.partial` as they arrive; if an earlier attempt
    /// for the same object (same size and SHA-256) left a partial file, the transfer
    /// resumes from its length. The SHA-256 is verified before the file is moved into place.
    @discardableResult
    public func receiveObject(_ offer: ObjectOffer, to destination: URL, maxSize: UInt64,
                              progress: (@Sendable (UInt64, UInt64) async -> Void)? = nil) async throws -> TransferStats {
        guard offer.size <= maxSize else {
            try await refuse(offer)
            throw TransportError.transferFailed("refused object \(offer.id): \(offer.size) bytes exceeds the limit of \(maxSize) bytes")
        }
        return try await fetch(offer, to: destination, progress: progress)
    }

    /// Declines an offer (the sender gets a `refused` receipt and stops).
    public func refuse(_ offer: ObjectOffer) async throws {
        try await send(.objectReceipt(ObjectReceipt(id: offer.id, status: .refused)))
    }

    /// Fetches the object `reference` names from the peer into `destination` (replaced
    /// atomically once its SHA-256 checks): sends `objectRequest` from the length of any
    /// partial file an interrupted attempt left, then stores the chunks. The school's side
    /// of getting a global version by hash. Refused locally when larger than `maxSize`.
    @discardableResult
    public func fetchObject(_ reference: ObjectRef, kind: ObjectKind, to destination: URL, maxSize: UInt64,
                            progress: (@Sendable (UInt64, UInt64) async -> Void)? = nil) async throws -> TransferStats {
        guard reference.size <= maxSize else {
            throw TransportError.transferFailed("object \(reference.id) is \(reference.size) bytes, over the limit of \(maxSize) bytes")
        }
        let offer = ObjectOffer(id: reference.id, kind: kind, size: reference.size, sha256: reference.sha256)
        return try await fetch(offer, to: destination, progress: progress)
    }

    private func fetch(_ offer: ObjectOffer, to destination: URL,
                       progress: (@Sendable (UInt64, UInt64) async -> Void)?) async throws -> TransferStats {
        let started = ContinuousClock.now
        let sink = try await Self.openSink(destination: destination, offer: offer, patience: .seconds(30))
        defer { sink.close() }
        let start = sink.offset
        try await send(.objectRequest(ObjectRequest(id: offer.id, offset: start)))
        while true {
            let m = try await receiveForTransfer()
            switch m {
            case .objectChunk(let c) where c.id == offer.id:
                guard c.offset == sink.offset else {
                    throw TransportError.protocolViolation("chunk at offset \(c.offset), expected \(sink.offset)")
                }
                guard c.offset + UInt64(c.data.readableBytes) <= offer.size else {
                    throw TransportError.protocolViolation("chunk runs past the offered size \(offer.size)")
                }
                try sink.append(c.data)
                await progress?(sink.offset, offer.size)
            case .objectComplete(let done) where done.id == offer.id:
                let status: ReceiptStatus
                if sink.offset != offer.size { status = .sizeMismatch }
                else if sink.digest() != offer.sha256 || done.sha256 != offer.sha256 { status = .digestMismatch }
                else { status = .stored }
                if status == .stored { try sink.commit() } else { sink.discard() }
                try await send(.objectReceipt(ObjectReceipt(id: offer.id, status: status)))
                guard status == .stored else {
                    throw TransportError.transferFailed("object \(offer.id): \(status.rawValue)")
                }
                return TransferStats(startOffset: start, bytesTransferred: offer.size - start, size: offer.size,
                                     sha256: offer.sha256, seconds: Self.seconds(since: started))
            default:
                throw TransportError.protocolViolation("unexpected \(m.type.name) during transfer of \(offer.id)")
            }
        }
    }

    /// Opens the sink, waiting (polling) while a receiver from an earlier, dropped connection
    /// still holds the same partial file; it lets go as soon as it notices its connection ended.
    static func openSink(destination: URL, offer: ObjectOffer, patience: Duration) async throws -> FileObjectSink {
        let giveUp = ContinuousClock.now + patience
        while true {
            do { return try FileObjectSink(destination: destination, offer: offer) } catch is SinkBusy {
                guard ContinuousClock.now < giveUp else {
                    throw TransportError.transferFailed("object \(offer.id): \(destination.lastPathComponent) is still being received by an earlier connection")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    static func seconds(since t: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - t
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
