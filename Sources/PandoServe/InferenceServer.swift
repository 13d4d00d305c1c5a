import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import PandoLedger
import PandoServices
import PandoStatus
import ServiceLifecycle

/// Where and how `pando serve` listens.
public struct ServeSettings: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var certificate: URL?
    public var privateKey: URL?
    /// Clients must send `Authorization: Bearer <token>` (every path but /healthz).
    public var tokenFile: URL?
    /// Clients must present a certificate this CA issued (mutual TLS).
    public var clientCA: URL?
    public var limits = ServeLimits()
    public var batching = InferenceQueue.Limits()
    /// Connections served at once; more wait in the listen backlog.
    public var maxConnections = 128
    public var idleTimeout: TimeAmount = .seconds(30)
    /// How long a request's body may take to arrive once its headers have (else 408).
    public var bodyTimeout: Duration = .seconds(10)
    /// Handle SIGTERM/SIGINT (graceful drain); off for servers inside tests.
    public var handleSignals = false

    public init() {}

    public var usesTLS: Bool { certificate != nil }

    /// The status listener's rule: loopback by default; any other address only with TLS.
    public func validate() throws {
        if !(0...65535).contains(port) { throw ServeError("--port: must be 0–65535") }
        if (certificate == nil) != (privateKey == nil) { throw ServeError("--tls-certificate and --tls-key go together") }
        if clientCA != nil && !usesTLS { throw ServeError("--client-ca: client certificates need TLS (--tls-certificate, --tls-key)") }
        if !StatusSettings(host: host, port: port).isLoopback && !usesTLS {
            throw ServeError("--host \(host) is not a loopback address: serving beyond this machine needs TLS (--tls-certificate and --tls-key; add --token-file or --client-ca for a credential)")
        }
    }
}

/// `pando serve`: HTTP inference for one checkpoint, on Hummingbird.
///
/// - `POST /predict`: `{"inputs": "text" | ["a", …], "parameters": {"top_k": N}}` → one
///   `[{"label", "score"}]` list per input, highest score first (the Hugging Face Inference API's
///   text-classification shape; multi-label and ordinal entries add `"predicted"`; regression
///   answers one entry whose score is the value).
/// - `POST /embed`: the same inputs → one L2-normalised vector per input.
/// - `GET /healthz`, `GET /model` (task, labels, version, SHA-256 of the weights, limits).
///
/// Requests are batched dynamically (`InferenceQueue`); a full queue answers 503 with
/// Retry-After, oversized bodies, texts or input counts 413, malformed JSON 400 naming the
/// field. The access log has method, path, status, latency and input count, never a text.
public final class InferenceServer: Sendable {
    public let model: ServedModel
    public let settings: ServeSettings
    public let queue: InferenceQueue
    let credentials: ListenerCredentials
    let logger: Logger
    private let group = NIOLockedValueBox<ServiceGroup?>(nil)
    private let stopRequested = NIOLockedValueBox(false)

    public static let maxHeaderBytes = 16 << 10

    public init(model: ServedModel, settings: ServeSettings, logger: Logger) throws {
        try settings.validate()
        self.model = model
        self.settings = settings
        self.logger = logger
        credentials = try ListenerCredentials(tokenFile: settings.tokenFile, field: "--token-file")
        queue = InferenceQueue(limits: settings.batching) { [model] kind, sequences in model.run(kind, sequences) }
    }

    /// Serves until `shutdown()` (or, with `settings.handleSignals`, SIGTERM/SIGINT), then
    /// drains: no new connections, requests in flight are answered, then the worker stops.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let tls = try settings.certificate.map { certificate in
            try ListenerCredentials.tlsConfiguration(certificate: certificate, key: settings.privateKey!, clientCA: settings.clientCA,
                                                     field: "--tls-certificate / --tls-key / --client-ca")
        }
        let http = HTTP1Channel.Configuration(
            idleTimeout: settings.idleTimeout,
            httpDecoderConfiguration: .init(maxHeaderFieldSize: Self.maxHeaderBytes, maxHeaderListSize: Self.maxHeaderBytes, maxHeaderFieldCount: 64))
        let server: HTTPServerBuilder = try tls.map { try .tls(.http1(configuration: http), tlsConfiguration: $0) } ?? .http1(configuration: http)
        let scheme = settings.usesTLS ? "https" : "http"
        let host = settings.host, log = logger
        let description = model.version.map { "version \($0.prefix(12))" } ?? "sha256 \(model.weightsSHA256.prefix(12))"
        let task = model.task.rawValue, int8 = model.int8
        let app = Application(
            responder: ServeResponder(server: self), server: server,
            configuration: .init(address: .hostname(host, port: settings.port), serverName: "pando-serve", backlog: 1024,
                                 availableConnectionsDelegate: MaximumAvailableConnections(settings.maxConnections)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                log.info("serving \(task) model (\(description)\(int8 ? ", int8" : "")) on \(scheme)://\(host):\(port)/ (POST /predict, POST /embed, GET /model, GET /healthz)")
                onListening(port)
            },
            logger: StatusServer.serverLogger(logger))
        queue.start()
        let serviceGroup = ServiceGroup(configuration: .init(
            services: [app], gracefulShutdownSignals: settings.handleSignals ? [.sigterm, .sigint] : [],
            logger: StatusServer.serverLogger(logger)))
        group.withLockedValue { $0 = serviceGroup }
        if stopRequested.withLockedValue({ $0 }) { await serviceGroup.triggerGracefulShutdown() }
        defer { queue.stop() }
        try await withTaskCancellationHandler {
            try await serviceGroup.run()
        } onCancel: {
            Task { await serviceGroup.triggerGracefulShutdown() }
        }
        logger.info("stopped: requests in flight were answered")
    }

    /// Starts a graceful shutdown (as SIGTERM does).
    public func shutdown() async {
        stopRequested.withLockedValue { $0 = true }
        if let g = group.withLockedValue({ $0 }) { await g.triggerGracefulShutdown() }
    }

    // MARK: Requests

    /// One request's answer and how many inputs it had (for the access log).
    func answer(_ request: Request) async -> (Response, Int?) {
        let path = request.uri.path
        if path != "/healthz", !credentials.authorised(request.headers[.authorization]) {
            var r = Self.error(.unauthorized, "a bearer token is required (Authorization: Bearer …)")
            r.headers[.wwwAuthenticate] = "Bearer realm=\"pando-serve\""
            return (r, nil)
        }
        let routes: [String: HTTPRequest.Method] = ["/predict": .post, "/embed": .post, "/model": .get, "/healthz": .get]
        guard let method = routes[path] else {
            return (Self.error(.notFound, "no such endpoint; served: POST /predict, POST /embed, GET /model, GET /healthz"), nil)
        }
        guard request.method == method || (method == .get && request.method == .head) else {
            var r = Self.error(.methodNotAllowed, "\(path) takes \(method.rawValue)")
            r.headers[.allow] = method.rawValue
            return (r, nil)
        }
        switch path {
        case "/healthz":
            return (Self.json(Data("{\"status\":\"ok\"}".utf8)), nil)
        case "/model":
            var description = model.description(limits: settings.limits)
            let stats = queue.statistics, limits = queue.limits
            description.batching = BatchingStatistics(
                batches: stats.batches, sequences: stats.sequences, largestBatch: stats.largest, maxBatchSequences: limits.maxBatchSequences,
                maxBatchTokens: limits.maxBatchTokens, maxWaitMilliseconds: limits.maxWait * 1000, queueCapacity: limits.capacity,
                waiting: queue.waiting)
            return (Self.encode(description), nil)
        default:
            return await infer(request, kind: path == "/embed" ? .embeddings : .logits)
        }
    }

    func infer(_ request: Request, kind: InferenceQueue.Kind) async -> (Response, Int?) {
        let limits = settings.limits
        let type = request.headers[.contentType]?.lowercased() ?? ""
        guard type.hasPrefix("application/json") else {
            return (Self.error(.unsupportedMediaType, "Content-Type: expected application/json"), nil)
        }
        if let length = request.headers[.contentLength], let n = Int(length), n > limits.maxBodyBytes {
            return (Self.error(.contentTooLarge, "body: \(n) bytes; at most \(limits.maxBodyBytes)"), nil)
        }
        let body: ByteBuffer
        do { body = try await Self.collect(request.body, upTo: limits.maxBodyBytes, within: settings.bodyTimeout) } catch BodyError.timedOut {
            return (Self.error(.requestTimeout, "body: not received within \(settings.bodyTimeout)"), nil)
        } catch {
            return (Self.error(.contentTooLarge, "body: more than \(limits.maxBodyBytes) bytes"), nil)
        }
        let parsed: ServeRequest
        do { parsed = try ServeRequest.parse(Data(buffer: body), limits: limits, allowTopK: kind == .logits) } catch {
            return (Self.error(.init(code: error.status), error.message), nil)
        }
        let count = parsed.texts.count
        let outputs: [[Float]]
        do {
            outputs = try await queue.submit(kind, model.encode(parsed.texts))
        } catch InferenceQueue.QueueError.full {
            var r = Self.error(.serviceUnavailable, "busy: the inference queue is full; retry shortly")
            r.headers[.retryAfter] = "1"
            return (r, count)
        } catch InferenceQueue.QueueError.stopped {
            var r = Self.error(.serviceUnavailable, "shutting down")
            r.headers[.retryAfter] = "5"
            return (r, count)
        } catch {
            logger.error("inference failed: \(error)")
            return (Self.error(.internalServerError, "inference failed"), count)
        }
        switch kind {
        case .logits: return (Self.encode(outputs.map { model.scores($0, topK: parsed.topK) }), count)
        case .embeddings: return (Self.encode(outputs), count)
        }
    }

    enum BodyError: Error { case timedOut }

    /// The whole body, or `BodyError.timedOut` when it has not arrived within `timeout` (a client
    /// trickling its body a byte at a time holds a connection for that long at most).
    static func collect(_ body: RequestBody, upTo limit: Int, within timeout: Duration) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await body.collect(upTo: limit) }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let buffer = first else { throw BodyError.timedOut }
            return buffer
        }
    }

    // MARK: Responses

    static func json(_ body: Data, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        headers[.init("X-Content-Type-Options")!] = "nosniff"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: body)))
    }

    static func encode<T: Encodable>(_ value: T) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else {
            // A non-finite output (a broken checkpoint) cannot be written as JSON.
            return error(.internalServerError, "the model produced a non-finite output")
        }
        return json(data)
    }

    /// `{"error": message}`.
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json((try? JSONSerialization.data(withJSONObject: ["error": message], options: [.sortedKeys])) ?? Data(), status: status)
    }

    /// The access-log line's path: at most 64 characters, control and format characters escaped.
    static func loggedPath(_ path: String) -> String {
        TerminalText.safe(path.count > 64 ? String(path.prefix(64)) + "…" : path)
    }
}

/// Routes every request through `InferenceServer.answer` and writes the access log.
struct ServeResponder: HTTPResponder {
    typealias Context = BasicRequestContext
    let server: InferenceServer

    func respond(to request: Request, context: Context) async throws -> Response {
        let start = ContinuousClock.now
        let (response, inputs) = await server.answer(request)
        let elapsed = ContinuousClock.now - start
        let ms = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
        let method = TerminalText.safe(String(request.method.rawValue.prefix(16))), path = InferenceServer.loggedPath(request.uri.path), status = response.status.code
        var metadata: Logger.Metadata = ["method": "\(method)", "path": "\(path)", "status": "\(status)", "latency_ms": "\(String(format: "%.2f", ms))"]
        if let inputs { metadata["inputs"] = "\(inputs)" }
        server.logger.info("\(method) \(path) \(status) \(String(format: "%.1f", ms)) ms\(inputs.map { " inputs=\($0)" } ?? "")", metadata: metadata)
        return response
    }
}
