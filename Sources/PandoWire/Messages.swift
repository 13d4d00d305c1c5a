import Foundation
import NIOCore

/// Protocol constants.
public enum PandoProtocol {
    /// The wire protocol version this build speaks. Peers must speak exactly the same version.
    public static let version: UInt16 = 1
    /// Capabilities this build offers (intersection is negotiated in the handshake).
    public static let capabilities: [WireToken] = ["object-transfer.v1", "resume.v1", "heartbeat.v1"]
}

/// Who may send a message type.
public enum MessageDirection: Sendable {
    case clientToCoordinator, coordinatorToClient, both
    public var clientMaySend: Bool { self != .coordinatorToClient }
    public var coordinatorMaySend: Bool { self != .clientToCoordinator }
}

/// The one-byte type of every frame. Values are fixed forever; new types get new values.
public enum MessageType: UInt8, CaseIterable, Sendable {
    case hello = 0x01
    case welcome = 0x02
    case reject = 0x03
    case heartbeat = 0x04
    case heartbeatAck = 0x05
    case goodbye = 0x06
    case objectOffer = 0x10
    case objectRequest = 0x11
    case objectChunk = 0x12
    case objectComplete = 0x13
    case objectReceipt = 0x14
    case roundAssignment = 0x20
    case roundResult = 0x21
    case secAggKeys = 0x30
    case secAggKeyBundle = 0x31
    case secAggShares = 0x32
    case secAggShareDelivery = 0x33
    case secAggUnmask = 0x34
    case secAggReveal = 0x35

    public var direction: MessageDirection {
        switch self {
        case .hello, .heartbeat, .roundResult, .secAggKeys, .secAggShares, .secAggReveal: return .clientToCoordinator
        case .welcome, .reject, .heartbeatAck, .roundAssignment, .secAggKeyBundle, .secAggShareDelivery, .secAggUnmask:
            return .coordinatorToClient
        case .goodbye, .objectOffer, .objectRequest, .objectChunk, .objectComplete, .objectReceipt: return .both
        }
    }

    public var name: String { String(describing: self) }
}

// MARK: Payloads

/// First frame from the client.
public struct Hello: Codable, Sendable, Equatable {
    public var protocolVersion: UInt16
    public var softwareVersion: WireToken
    public var capabilities: [WireToken]
    public init(protocolVersion: UInt16 = PandoProtocol.version, softwareVersion: WireToken,
                capabilities: [WireToken] = PandoProtocol.capabilities) {
        self.protocolVersion = protocolVersion
        self.softwareVersion = softwareVersion
        self.capabilities = capabilities
    }
}

/// The coordinator's answer to an acceptable `Hello`.
public struct Welcome: Codable, Sendable, Equatable {
    public var protocolVersion: UInt16
    public var softwareVersion: WireToken
    /// Capabilities both sides have.
    public var capabilities: [WireToken]
    /// The school ID the coordinator read from the client certificate.
    public var schoolID: WireToken
    /// How often the client must send a heartbeat.
    public var heartbeatIntervalMillis: UInt32
    /// Silence (no frame at all) after which the coordinator drops the connection.
    public var idleTimeoutMillis: UInt32
    public var maxFrameLength: UInt32
    public init(protocolVersion: UInt16 = PandoProtocol.version, softwareVersion: WireToken, capabilities: [WireToken],
                schoolID: WireToken, heartbeatIntervalMillis: UInt32, idleTimeoutMillis: UInt32, maxFrameLength: UInt32) {
        self.protocolVersion = protocolVersion
        self.softwareVersion = softwareVersion
        self.capabilities = capabilities
        self.schoolID = schoolID
        self.heartbeatIntervalMillis = heartbeatIntervalMillis
        self.idleTimeoutMillis = idleTimeoutMillis
        self.maxFrameLength = maxFrameLength
    }
}

public enum RejectCode: String, Codable, Sendable, CaseIterable {
    case protocolVersionMismatch = "protocol-version-mismatch"
    case handshakeExpected = "handshake-expected"
    case notAuthorised = "not-authorised"
    case duplicateSession = "duplicate-session"
    case shuttingDown = "shutting-down"
    /// The coordinator has as many school sessions as it allows; retry later.
    case busy = "busy"
}

/// Coordinator → client only: why the session is refused. `reason` is for the school's log.
public struct Reject: Codable, Sendable, Equatable, Error {
    public var code: RejectCode
    public var reason: String
    public var supportedProtocolVersions: [UInt16]
    public init(code: RejectCode, reason: String, supportedProtocolVersions: [UInt16] = [PandoProtocol.version]) {
        self.code = code
        self.reason = reason
        self.supportedProtocolVersions = supportedProtocolVersions
    }
}

/// What a school is doing, reported in every heartbeat.
public enum SchoolActivity: String, Codable, Sendable, CaseIterable {
    case idle, training, evaluating, transferring
}

public struct Heartbeat: Codable, Sendable, Equatable {
    public var sequence: UInt64
    public var activity: SchoolActivity
    /// Fraction of the current activity done, 0…1, when known.
    public var progress: Double?
    public init(sequence: UInt64, activity: SchoolActivity, progress: Double? = nil) {
        self.sequence = sequence
        self.activity = activity
        self.progress = progress
    }
}

public struct HeartbeatAck: Codable, Sendable, Equatable {
    public var sequence: UInt64
    public init(sequence: UInt64) { self.sequence = sequence }
}

public enum GoodbyeCode: String, Codable, Sendable, CaseIterable {
    case normal, shuttingDown = "shutting-down", protocolError = "protocol-error", idleTimeout = "idle-timeout"
}

public struct Goodbye: Codable, Sendable, Equatable {
    public var code: GoodbyeCode
    public init(code: GoodbyeCode) { self.code = code }
}

/// What kind of bytes an object holds. Objects are model tensors, never text.
public enum ObjectKind: String, Codable, Sendable, CaseIterable {
    /// A safetensors checkpoint (global model).
    case checkpoint
    /// A safetensors model delta (a school's update).
    case update
    /// Opaque test payload.
    case blob
}

/// Sender → receiver: "I have this object". The receiver answers with `ObjectRequest`.
public struct ObjectOffer: Codable, Sendable, Equatable {
    public var id: WireToken
    public var kind: ObjectKind
    public var size: UInt64
    public var sha256: ObjectDigest
    public init(id: WireToken, kind: ObjectKind, size: UInt64, sha256: ObjectDigest) {
        self.id = id
        self.kind = kind
        self.size = size
        self.sha256 = sha256
    }
}

/// Receiver → sender: "send from this byte offset" (0, or what a previous attempt already stored).
public struct ObjectRequest: Codable, Sendable, Equatable {
    public var id: WireToken
    public var offset: UInt64
    public init(id: WireToken, offset: UInt64) {
        self.id = id
        self.offset = offset
    }
}

/// Raw bytes of an object at `offset` (binary payload, no JSON).
public struct ObjectChunk: Sendable, Equatable {
    public var id: WireToken
    public var offset: UInt64
    public var data: ByteBuffer
    public init(id: WireToken, offset: UInt64, data: ByteBuffer) {
        self.id = id
        self.offset = offset
        self.data = data
    }
}

/// Sender → receiver: all bytes sent.
public struct ObjectComplete: Codable, Sendable, Equatable {
    public var id: WireToken
    public var sha256: ObjectDigest
    public init(id: WireToken, sha256: ObjectDigest) {
        self.id = id
        self.sha256 = sha256
    }
}

public enum ReceiptStatus: String, Codable, Sendable, CaseIterable {
    case stored, digestMismatch = "digest-mismatch", sizeMismatch = "size-mismatch", refused
}

/// Receiver → sender: the object's fate after `ObjectComplete`.
public struct ObjectReceipt: Codable, Sendable, Equatable {
    public var id: WireToken
    public var status: ReceiptStatus
    public init(id: WireToken, status: ReceiptStatus) {
        self.id = id
        self.status = status
    }
}

/// A reference to an object transferred separately.
public struct ObjectRef: Codable, Sendable, Equatable {
    public var id: WireToken
    public var size: UInt64
    public var sha256: ObjectDigest
    public init(id: WireToken, size: UInt64, sha256: ObjectDigest) {
        self.id = id
        self.size = size
        self.sha256 = sha256
    }
}

/// What a round asks of a school.
public enum RoundTask: String, Codable, Sendable, CaseIterable {
    /// Fine-tune `model` on the school's training data and send the delta.
    case train
    /// Score `model` on the school's validation data and send aggregate metrics only.
    case evaluate
}

/// The coordinator's audit head when it sent an assignment: the `seq` of the last record of
/// its signed audit log and that record's hash. The school writes it into its own log, so
/// `pando audit verify` can check that the coordinator's log still holds exactly that record:
/// a log rewritten later (with the coordinator's own key) no longer matches what schools saw.
public struct AuditAnchor: Codable, Sendable, Equatable {
    public var sequence: UInt64
    public var hash: ObjectDigest
    public init(sequence: UInt64, hash: ObjectDigest) {
        self.sequence = sequence
        self.hash = hash
    }
}

/// One global version as the coordinator recorded it: its id (the SHA-256 of its
/// `model.safetensors`), the version it was aggregated from and the round that made it
/// (both absent for the federation's base model).
public struct VersionLink: Codable, Sendable, Equatable {
    public var version: ObjectDigest
    public var parent: ObjectDigest?
    public var round: UInt64?
    public init(version: ObjectDigest, parent: ObjectDigest?, round: UInt64?) {
        self.version = version
        self.parent = parent
        self.round = round
    }
}

/// Where the version an assignment names comes from, as the coordinator's ledger records it:
/// the version itself, its parent, its parent's parent … nearest first, ending at the
/// federation's base model (the link without a parent) or after `maxLinks`. A school accepts
/// the version only if this chain reaches a version it accepted before, the version it is
/// configured to trust, or the base model it rebuilds from its own copy with `initSeed`.
public struct VersionLineage: Codable, Sendable, Equatable {
    public var chain: [VersionLink]
    /// The seed the base model's newly initialised tensors (task head, pooler) were drawn with.
    public var initSeed: UInt64
    public static let maxLinks = 64
    public init(chain: [VersionLink], initSeed: UInt64) {
        self.chain = chain
        self.initSeed = initSeed
    }
}

/// Coordinator → client: train (or evaluate) round `round` starting from `model`.
///
/// `model` names the global version by its SHA-256; the school fetches it with an
/// unsolicited `objectRequest` unless it holds it already. `nonce` is fresh per
/// assignment and must come back in the `roundResult`, so a result can answer only
/// the assignment it was made for. `auditHead` (optional on the wire; every coordinator of
/// this version sends it) anchors the coordinator's audit log in the school's own log;
/// `lineage` (also optional on the wire, but a school of this version declines an
/// assignment without it) says where `model` comes from.
public struct RoundAssignment: Codable, Sendable, Equatable {
    public var round: UInt64
    public var task: RoundTask
    public var model: ObjectRef
    public var nonce: WireToken
    public var parameters: [WireToken: Double]
    public var auditHead: AuditAnchor?
    public var lineage: VersionLineage?
    /// Present when the round uses secure aggregation: the school then sends its update
    /// masked (``SecureAggregationSetup``), and a school that requires it declines without.
    public var secureAggregation: SecureAggregationSetup?
    /// `model` as the bytes that differ from an earlier version (its parent): a school that holds
    /// `base` fetches `object` instead of the whole file, and keeps the result only if it hashes
    /// to `model.sha256`.
    public var patch: VersionPatchRef?
    public init(round: UInt64, task: RoundTask = .train, model: ObjectRef, nonce: WireToken, parameters: [WireToken: Double],
                auditHead: AuditAnchor? = nil, lineage: VersionLineage? = nil, secureAggregation: SecureAggregationSetup? = nil,
                patch: VersionPatchRef? = nil) {
        self.round = round
        self.task = task
        self.model = model
        self.nonce = nonce
        self.parameters = parameters
        self.auditHead = auditHead
        self.lineage = lineage
        self.secureAggregation = secureAggregation
        self.patch = patch
    }
}

/// A version patch on offer: applies to the version `base`.
public struct VersionPatchRef: Codable, Sendable, Equatable {
    public var base: ObjectDigest
    public var object: ObjectRef
    public init(base: ObjectDigest, object: ObjectRef) {
        self.base = base
        self.object = object
    }
}

public enum RoundStatus: String, Codable, Sendable, CaseIterable {
    case completed, failed, declined
}

/// Client → coordinator: outcome of a round. Numbers and tokens only.
public struct RoundResult: Codable, Sendable, Equatable {
    public var round: UInt64
    /// The assignment's task and nonce, echoed.
    public var task: RoundTask
    public var nonce: WireToken
    public var status: RoundStatus
    public var update: ObjectRef?
    public var exampleCount: UInt64
    /// Metric name → value (finite). At most `RoundResult.maxMetrics` entries.
    public var metrics: [WireToken: Double]
    /// With `declined`: why, as a token (e.g. `lineage-unknown-parent`), never free text; the
    /// coordinator records it in its audit log, the school its own sentence in its log.
    public var declineReason: WireToken?
    /// Under secure aggregation: the peers whose pairwise masks are in the update, so the
    /// coordinator can check the school's view of who shared agrees with its own.
    public var maskedWith: [WireToken]?
    public static let maxMetrics = 256
    public init(round: UInt64, task: RoundTask = .train, nonce: WireToken, status: RoundStatus, update: ObjectRef?,
                exampleCount: UInt64, metrics: [WireToken: Double], declineReason: WireToken? = nil, maskedWith: [WireToken]? = nil) {
        self.round = round
        self.task = task
        self.nonce = nonce
        self.status = status
        self.update = update
        self.exampleCount = exampleCount
        self.metrics = metrics
        self.declineReason = declineReason
        self.maskedWith = maskedWith
    }
}

// MARK: Message

/// Every message of protocol version 1.
public enum WireMessage: Sendable, Equatable {
    case hello(Hello)
    case welcome(Welcome)
    case reject(Reject)
    case heartbeat(Heartbeat)
    case heartbeatAck(HeartbeatAck)
    case goodbye(Goodbye)
    case objectOffer(ObjectOffer)
    case objectRequest(ObjectRequest)
    case objectChunk(ObjectChunk)
    case objectComplete(ObjectComplete)
    case objectReceipt(ObjectReceipt)
    case roundAssignment(RoundAssignment)
    case roundResult(RoundResult)
    case secAggKeys(SecAggKeys)
    case secAggKeyBundle(SecAggKeyBundleMessage)
    case secAggShares(SecAggShares)
    case secAggShareDelivery(SecAggShareDelivery)
    case secAggUnmask(SecAggUnmask)
    case secAggReveal(SecAggReveal)

    public var type: MessageType {
        switch self {
        case .hello: return .hello
        case .welcome: return .welcome
        case .reject: return .reject
        case .heartbeat: return .heartbeat
        case .heartbeatAck: return .heartbeatAck
        case .goodbye: return .goodbye
        case .objectOffer: return .objectOffer
        case .objectRequest: return .objectRequest
        case .objectChunk: return .objectChunk
        case .objectComplete: return .objectComplete
        case .objectReceipt: return .objectReceipt
        case .roundAssignment: return .roundAssignment
        case .roundResult: return .roundResult
        case .secAggKeys: return .secAggKeys
        case .secAggKeyBundle: return .secAggKeyBundle
        case .secAggShares: return .secAggShares
        case .secAggShareDelivery: return .secAggShareDelivery
        case .secAggUnmask: return .secAggUnmask
        case .secAggReveal: return .secAggReveal
        }
    }

    /// Semantic limits beyond what the types enforce.
    public func validate(limits: WireLimits = .default) throws {
        func fail(_ d: String) -> WireError { .malformed(type: type.name, detail: d) }
        switch self {
        case .hello(let h):
            if h.capabilities.count > 64 { throw fail("more than 64 capabilities") }
        case .welcome(let w):
            if w.capabilities.count > 64 { throw fail("more than 64 capabilities") }
        case .reject(let r):
            if r.reason.utf8.count > 4096 { throw fail("reason longer than 4096 bytes") }
            if r.supportedProtocolVersions.count > 64 { throw fail("too many versions") }
        case .heartbeat(let h):
            if let p = h.progress, !(p.isFinite && p >= 0 && p <= 1) { throw fail("progress outside 0…1") }
        case .objectChunk(let c):
            if c.data.readableBytes == 0 { throw fail("empty chunk") }
            let (end, overflow) = c.offset.addingReportingOverflow(UInt64(c.data.readableBytes))
            if overflow || end > UInt64(Int64.max) { throw fail("chunk offset overflows") }
        case .roundAssignment(let a):
            if a.parameters.count > RoundResult.maxMetrics { throw fail("too many parameters") }
            if a.parameters.values.contains(where: { !$0.isFinite }) { throw fail("non-finite parameter") }
            if let l = a.lineage, l.chain.isEmpty || l.chain.count > VersionLineage.maxLinks {
                throw fail("lineage of \(l.chain.count) links (1…\(VersionLineage.maxLinks))")
            }
            try validateSecureAggregation(fail)
        case .roundResult(let r):
            if r.metrics.count > RoundResult.maxMetrics { throw fail("more than \(RoundResult.maxMetrics) metrics") }
            if r.metrics.values.contains(where: { !$0.isFinite }) { throw fail("non-finite metric") }
            if let m = r.maskedWith, m.count > SecureAggregationSetup.maxRoster { throw fail("masked with more than \(SecureAggregationSetup.maxRoster) peers") }
        case .secAggKeys, .secAggKeyBundle, .secAggShares, .secAggShareDelivery, .secAggUnmask, .secAggReveal:
            try validateSecureAggregation(fail)
        case .heartbeatAck, .goodbye, .objectOffer, .objectRequest, .objectComplete, .objectReceipt:
            break
        }
    }
}
