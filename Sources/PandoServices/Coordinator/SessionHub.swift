import Foundation
import Logging
import NIOConcurrencyHelpers
import PandoTransport
import PandoWire

/// A mutual-exclusion lock for async code: one transfer or assignment at a time on a
/// connection, so an assignment never lands in the middle of a chunk stream.
actor AsyncGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !busy {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }

    nonisolated func withLock<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        await acquire()
        do {
            let value = try await body()
            await release()
            return value
        } catch {
            await release()
            throw error
        }
    }
}

/// One school's live connection, as the round driver sees it.
final class SchoolSession: Sendable {
    let school: String
    let connection: PandoConnection
    let gate = AsyncGate()
    let id = UUID()
    init(school: String, connection: PandoConnection) {
        self.school = school
        self.connection = connection
    }
}

/// What sessions tell the round driver.
enum HubEvent: Sendable {
    case connected(String)
    case disconnected(String)
    case uploaded(String, round: Int)
    case result(String, RoundResult)
    /// A timer the driver set went off (`token` says which).
    case timer(Int)
    /// The school's certificate is no longer acceptable (revoked or expired since it
    /// connected); its session was closed. `reason` says why.
    case credentialsRevoked(String, reason: String)
    /// The operator asked the coordinator to stop (SIGTERM, SIGINT): the open round is aborted.
    case stopRequested(String)
    /// A secure-aggregation message from a school (keys, shares, revealed shares).
    case secureAggregation(String, WireMessage)
}

/// A failure no retry can cure (the head version no longer matches its id): the coordinator
/// stops with `underlying` instead of going on to the next round.
struct IntegrityFailure: Error {
    let underlying: Error
}

/// Thrown through the round driver when the coordinator is asked to stop.
struct StopRequested: Error, CustomStringConvertible {
    let reason: String
    var description: String { "the coordinator was stopped (\(reason))" }
}

/// What one school owes the open round.
struct Expectation: Sendable {
    var nonce: WireToken
    var uploadID: WireToken?
    var upload: (file: URL, digest: ObjectDigest, size: UInt64)?
}

/// The round the coordinator has open: who is expected to do what, which object may
/// be fetched, and the bytes moved. Sessions consult it to accept or refuse uploads.
struct OpenRound: Sendable {
    var number: Int
    var task: RoundTask
    var model: ObjectRef
    var modelFile: URL
    var expected: [String: Expectation]
    var updateSize: UInt64
    var bytesUp: UInt64 = 0
    var bytesDown: UInt64 = 0
    /// `model` as a patch from its parent, also servable (``VersionPatch``).
    var patch: (ref: VersionPatchRef, file: URL)?
}

/// The meeting point of the connection handlers (one task per school) and the round
/// driver: live sessions, the open round, and a stream of events for the driver.
final class SessionHub: @unchecked Sendable {
    private let lock = NIOLock()
    private var sessions: [String: SchoolSession] = [:]
    private var open: OpenRound?
    /// Objects schools may fetch: the open round's model and the previous one.
    private var servable: [(id: WireToken, file: URL, digest: ObjectDigest)] = []
    let events: AsyncStream<HubEvent>
    private let continuation: AsyncStream<HubEvent>.Continuation
    let incoming: URL
    let logger: Logger
    /// Why a school's certificate is not acceptable now (`nil`: it is). Asked at selection and
    /// before an upload or a result is taken, so a school revoked mid-session gets nothing in.
    let credentials: @Sendable (String) -> String?
    /// Called with a school's id when its session opens or closes (set before serving; the status monitor's clock).
    var onSessionChange: (@Sendable (String) -> Void)?
    /// Unexpected offers a session may make (each refused with a log line) before it is closed.
    static let maxRefusedOffers = 8

    init(incoming: URL, logger: Logger, credentials: @escaping @Sendable (String) -> String? = { _ in nil }) {
        (events, continuation) = AsyncStream.makeStream(of: HubEvent.self)
        self.incoming = incoming
        self.logger = logger
        self.credentials = credentials
    }

    func post(_ event: HubEvent) { continuation.yield(event) }
    func finish() { continuation.finish() }

    var connectedSchools: [String] { lock.withLock { sessions.keys.sorted() } }
    func session(_ school: String) -> SchoolSession? { lock.withLock { sessions[school] } }

    func register(_ s: SchoolSession) {
        lock.withLock { sessions[s.school] = s }
        onSessionChange?(s.school)
        post(.connected(s.school))
    }

    func unregister(_ s: SchoolSession) {
        let removed = lock.withLock { () -> Bool in
            guard sessions[s.school]?.id == s.id else { return false }
            sessions[s.school] = nil
            return true
        }
        if removed {
            onSessionChange?(s.school)
            post(.disconnected(s.school))
        }
    }

    /// Tells every connected school the coordinator is shutting down (best effort, at most
    /// `timeout`: a session stuck in a transfer is closed instead).
    func sayGoodbye(timeout: Duration = .seconds(5)) async {
        let all = lock.withLock { Array(sessions.values) }
        await withTaskGroup(of: Void.self) { group in
            for s in all {
                group.addTask {
                    let watchdog = Task {
                        try await Task.sleep(for: timeout)
                        s.connection.close()
                    }
                    defer { watchdog.cancel() }
                    _ = try? await s.gate.withLock { try await s.connection.send(.goodbye(Goodbye(code: .shuttingDown))) }
                }
            }
        }
    }

    /// Results a school may still send: one per assignment, plus a small allowance for late
    /// or repeated ones. A school that sends more is closed, so results cannot pile up in the
    /// driver's queue however fast a peer sends them.
    private var resultCredits: [String: Int] = [:]
    static let resultAllowance = 2, maxResultCredits = 8

    /// An assignment went to `school`: it may answer it (and, under secure aggregation, send
    /// its keys, shares and revealed shares once each).
    func noteAssignment(_ school: String, secure: Bool = false) {
        lock.withLock {
            resultCredits[school] = min(Self.maxResultCredits, credits(school) + 1)
            if secure { secureCredits[school] = min(2 * Self.secureMessagesPerRound, (secureCredits[school] ?? 0) + Self.secureMessagesPerRound) }
        }
    }

    /// Secure-aggregation messages a school may still send; more is a protocol violation.
    private var secureCredits: [String: Int] = [:]
    static let secureMessagesPerRound = 3

    func admitSecureMessage(_ school: String) -> Bool {
        lock.withLock {
            let left = secureCredits[school] ?? 0
            guard left > 0 else { return false }
            secureCredits[school] = left - 1
            return true
        }
    }

    /// Whether a result from `school` may be queued (and takes its credit).
    func admitResult(_ school: String) -> Bool {
        lock.withLock {
            let left = credits(school)
            guard left > 0 else { return false }
            resultCredits[school] = left - 1
            return true
        }
    }

    private func credits(_ school: String) -> Int { resultCredits[school] ?? Self.resultAllowance }

    func openRound(_ round: OpenRound) {
        lock.withLock {
            servable.removeAll { $0.id == round.model.id || $0.id == round.patch?.ref.object.id }
            var objects = [(round.model.id, round.modelFile, round.model.sha256)]
            if let p = round.patch { objects.append((p.ref.object.id, p.file, p.ref.object.sha256)) }
            // This round's objects and the previous round's (a school may still be finishing a fetch).
            servable = Array(servable.suffix(2)) + objects
            open = round
        }
    }

    /// Closes the open round; returns it (with its byte counts).
    /// Uploads still on disk were never used (their school's result did not come): removed,
    /// and so are partial uploads of the round (a cut transfer): nothing resumes them now.
    @discardableResult
    func closeRound() -> OpenRound? {
        let closed = lock.withLock { () -> OpenRound? in
            defer { open = nil }
            return open
        }
        for e in closed?.expected.values ?? [:].values {
            if let up = e.upload { try? FileManager.default.removeItem(at: up.file) }
        }
        if let closed { removePartialUploads(round: closed.number) }
        return closed
    }

    /// Where a school's upload for `round` is stored (`r<round>-<school>.delta`).
    func uploadFile(school: String, round: Int) -> URL {
        let safe = String(school.map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) ? $0 : "_" })
        return incoming.appendingPathComponent("r\(round)-\(safe).delta")
    }

    /// Deletes the partial files (`.partial`, `.partial.meta`) of every upload of `round`.
    func removePartialUploads(round: Int) {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: incoming.path)) ?? []
        where name.hasPrefix("r\(round)-") && (name.hasSuffix(".delta.partial") || name.hasSuffix(".delta.partial.meta")) {
            try? fm.removeItem(at: incoming.appendingPathComponent(name))
        }
    }

    /// True while `round`'s training is open (its uploads may still resume).
    func isTraining(round: Int) -> Bool { lock.withLock { open.map { $0.number == round && $0.task == .train } ?? false } }

    var current: OpenRound? { lock.withLock { open } }

    func servableObject(_ id: WireToken) -> (URL, ObjectDigest)? {
        lock.withLock { servable.first { $0.id == id }.map { ($0.file, $0.digest) } }
    }

    func countDown(_ bytes: UInt64) { lock.withLock { open?.bytesDown += bytes } }

    /// Where to store `offer` from `school`, or nil to refuse it: only the update the open
    /// training round expects from this school, of the model's exact size, not yet received.
    func uploadDestination(school: String, offer: ObjectOffer) -> (URL, Int)? {
        lock.withLock {
            guard let r = open, r.task == .train, offer.kind == .update, offer.size == r.updateSize,
                  let e = r.expected[school], e.uploadID == offer.id, e.upload == nil else { return nil }
            return (uploadFile(school: school, round: r.number), r.number)
        }
    }

    func uploaded(school: String, round: Int, offer: ObjectOffer, file: URL, bytesOnWire: UInt64) {
        let kept = lock.withLock { () -> Bool in
            guard let r = open, r.number == round, r.task == .train, let e = r.expected[school], e.upload == nil else { return false }
            open?.expected[school]?.upload = (file, offer.sha256, offer.size)
            open?.bytesUp += bytesOnWire
            return true
        }
        if kept {
            post(.uploaded(school, round: round))
        } else {
            // The round closed (or left the school out) while the bytes were arriving.
            try? FileManager.default.removeItem(at: file)
        }
    }

    /// Stops expecting anything from `school` this round; returns the upload it had stored, if any.
    func forget(_ school: String) -> (file: URL, digest: ObjectDigest, size: UInt64)? {
        lock.withLock { open?.expected.removeValue(forKey: school)?.upload }
    }

    /// The connection handler of one school session: serves fetches, takes uploads,
    /// passes results to the driver. Returns (throws) when the connection ends.
    func serve(_ connection: PandoConnection) async throws {
        let session = SchoolSession(school: connection.schoolID.value, connection: connection)
        register(session)
        defer { unregister(session) }
        var refusedOffers = 0
        while true {
            let message = try await connection.receive()
            switch message {
            case .objectOffer, .roundResult, .secAggKeys, .secAggShares, .secAggReveal:
                if let problem = credentials(session.school) {
                    post(.credentialsRevoked(session.school, reason: problem))
                    throw TransportError.tls("closing the session of \(session.school): \(problem)")
                }
            default: break
            }
            switch message {
            case .objectRequest(let request):
                guard let (file, digest) = servableObject(request.id) else {
                    throw TransportError.protocolViolation("request for unknown object \(request.id)")
                }
                let stats = try await session.gate.withLock {
                    try await connection.serveObject(request, file: file, sha256: digest)
                }
                countDown(stats.bytesTransferred)
            case .objectOffer(let offer):
                guard let (destination, round) = uploadDestination(school: session.school, offer: offer) else {
                    refusedOffers += 1
                    guard refusedOffers <= Self.maxRefusedOffers else {
                        throw TransportError.protocolViolation("\(refusedOffers) objects offered that no round expects")
                    }
                    logger.notice("refusing object \(offer.id) from \(session.school): no open round expects it")
                    try await connection.refuse(offer)
                    continue
                }
                let stats: PandoConnection.TransferStats
                do {
                    stats = try await session.gate.withLock {
                        try await connection.receiveObject(offer, to: destination, maxSize: offer.size)
                    }
                } catch {
                    // Cut after its round closed (which removed the round's partial files): none is left behind.
                    if !isTraining(round: round) { removePartialUploads(round: round) }
                    throw error
                }
                uploaded(school: session.school, round: round, offer: offer, file: destination, bytesOnWire: stats.bytesTransferred)
            case .roundResult(let result):
                guard admitResult(session.school) else {
                    throw TransportError.protocolViolation("more round results than assignments")
                }
                post(.result(session.school, result))
            case .secAggKeys, .secAggShares, .secAggReveal:
                guard admitSecureMessage(session.school) else {
                    throw TransportError.protocolViolation("more secure-aggregation messages than the rounds it was asked to")
                }
                post(.secureAggregation(session.school, message))
            default:
                throw TransportError.protocolViolation("unexpected \(message.type.name) from a school")
            }
        }
    }
}
