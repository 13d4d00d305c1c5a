import Crypto
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import PandoServices
import ServiceLifecycle

/// What went wrong setting up the status listener (a file, a credential); names the field.
public struct StatusError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The coordinator's status listener, on its own port: `GET /` (the status page),
/// `GET /api/v1/status` and `GET /api/v1/rounds` (JSON, `deploy/status-api.openapi.yaml`),
/// `GET /plot/<metric>.svg`, `GET /metrics` (Prometheus) and `GET /healthz`.
///
/// Bound to 127.0.0.1 unless configured otherwise; another address is accepted only with
/// TLS and a credential (`StatusSettings.validate`): a bearer token read from a file that
/// only its owner may read, compared in constant time and never logged, and/or client
/// certificates of a given CA (mutual TLS).
///
/// A misbehaving client is bounded: only GET with no body, headers of at most
/// 16 KiB, at most `maxConnections` connections at once (more wait in the backlog), idle
/// connections closed after `idleTimeout`, and the document the pages are made of is
/// rebuilt at most once per `refreshInterval` however many requests come.
public final class StatusServer: Sendable {
    public let settings: StatusSettings
    let configuration: CoordinatorConfiguration
    let monitor: CoordinatorMonitor
    public let metrics: StatusMetrics
    let logger: Logger
    let credentials: ListenerCredentials
    let snapshot: Snapshot

    public static let maxConnections = 64
    public static let idleTimeout: TimeAmount = .seconds(30)
    public static let maxHeaderBytes = 16 << 10
    static let refreshInterval: TimeInterval = 1

    /// Reads the token file now (refusing one that others may read), so a bad credential
    /// stops the coordinator at start rather than at the first request.
    public init(settings: StatusSettings, configuration: CoordinatorConfiguration, monitor: CoordinatorMonitor, logger: Logger) throws {
        self.settings = settings
        self.configuration = configuration
        self.monitor = monitor
        self.logger = logger
        metrics = StatusMetrics(monitor: monitor)
        credentials = try ListenerCredentials(tokenFile: settings.tokenFile, field: "status.token_file")
        snapshot = Snapshot(interval: Self.refreshInterval)
    }

    /// Whether an `Authorization` header carries the token (SHA-256 of both, compared in constant time).
    func authorised(_ header: String?) -> Bool { credentials.authorised(header) }

    /// The current document, rebuilt when the last one is older than `refreshInterval`.
    func document() throws -> StatusDocument {
        try snapshot.value { try StatusDocument.build(configuration: configuration, monitor: monitor) }
    }

    /// The TLS configuration, when `settings` asks for TLS.
    func tlsConfiguration() throws -> TLSConfiguration? {
        guard let certificate = settings.certificate, let key = settings.privateKey else { return nil }
        return try ListenerCredentials.tlsConfiguration(certificate: certificate, key: key, clientCA: settings.clientCA,
                                                        field: "status.certificate / status.key / status.client_ca")
    }

    /// Serves until cancelled; `onListening` gets the bound port (useful with port 0).
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        router.add(middleware: Guard(server: self))
        router.get("/") { _, _ in
            Self.response(Data(StatusPage.render(try self.document()).utf8), type: "text/html; charset=utf-8")
        }
        router.get("/api/v1/status") { _, _ in Self.response(try self.document().json(), type: "application/json") }
        router.get("/api/v1/rounds") { _, _ in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Self.response(try encoder.encode(try self.document().rounds), type: "application/json")
        }
        router.get("/plot/:file") { _, context in
            let file = context.parameters.get("file") ?? ""
            let metric = String(file.dropLast(".svg".count))
            let document = try self.document()
            guard file.hasSuffix(".svg"), document.plottedMetrics.contains(metric) else {
                return Self.error(.notFound, "no plotted metric '\(file)'; plotted: \(document.plottedMetrics.joined(separator: ", "))")
            }
            let svg = SVGPlot.rounds(document.series(metric), reference: nil, metric: metric, title: "federated \(metric) per round",
                                     axis: "federated \(metric)", series: "schools' validation data")
            return Self.response(Data(svg.utf8), type: "image/svg+xml")
        }
        router.get("/metrics") { _, _ in
            Self.response(Data(self.metrics.exposition(try self.document())), type: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/healthz") { _, _ in Self.response(Data("ok\n".utf8), type: "text/plain; charset=utf-8") }

        let http = HTTP1Channel.Configuration(
            idleTimeout: Self.idleTimeout,
            httpDecoderConfiguration: .init(maxHeaderFieldSize: Self.maxHeaderBytes, maxHeaderListSize: Self.maxHeaderBytes, maxHeaderFieldCount: 64))
        let server: HTTPServerBuilder = try tlsConfiguration().map { try .tls(.http1(configuration: http), tlsConfiguration: $0) }
            ?? .http1(configuration: http)
        let scheme = settings.usesTLS ? "https" : "http"
        let host = settings.host
        let quiet = logger
        let app = Application(
            router: router, server: server,
            configuration: .init(address: .hostname(host, port: settings.port), serverName: "pando-status", backlog: 64,
                                 availableConnectionsDelegate: MaximumAvailableConnections(Self.maxConnections)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                quiet.info("status page on \(scheme)://\(host):\(port)/ (JSON /api/v1/status, Prometheus /metrics)")
                onListening(port)
            },
            logger: Self.serverLogger(logger))
        // Cancelling this task shuts the listener down gracefully (requests in flight finish)
        // rather than cancelling its connections mid-answer.
        let group = ServiceGroup(configuration: .init(services: [app], logger: Self.serverLogger(logger)))
        let runner = Task { try await group.run() }
        try await withTaskCancellationHandler {
            try await runner.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }

    /// Hummingbird logs every request at debug level with its path and headers: keep it at
    /// notice so an Authorization header never reaches a log.
    public static func serverLogger(_ base: Logger) -> Logger {
        var l = base
        l.logLevel = max(base.logLevel, .notice)
        return l
    }

    static func response(_ body: Data, type: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-store"
        headers[.init("X-Content-Type-Options")!] = "nosniff"
        // The page has no scripts and loads nothing: say so, so a browser refuses any that sneaks in.
        headers[.init("Content-Security-Policy")!] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: body)))
    }

    /// A JSON error naming the problem.
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? JSONSerialization.data(withJSONObject: ["error": message], options: [.sortedKeys])) ?? Data()
        return response(body, type: "application/json", status: status)
    }
}

/// Refuses what the listener does not serve before any handler runs: methods other than
/// GET, requests with a body, and (with a token) requests without it (401, which
/// says nothing about what was wrong with a token).
struct Guard: RouterMiddleware {
    typealias Context = BasicRequestContext
    let server: StatusServer

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method == .get else {
            var r = StatusServer.error(.methodNotAllowed, "only GET is served")
            r.headers[.allow] = "GET"
            return r
        }
        if let length = request.headers[.contentLength], length != "0" {
            return StatusServer.error(.contentTooLarge, "requests to the status listener have no body")
        }
        if request.headers[.transferEncoding] != nil {
            return StatusServer.error(.contentTooLarge, "requests to the status listener have no body")
        }
        guard server.authorised(request.headers[.authorization]) else {
            var r = StatusServer.error(.unauthorized, "a bearer token is required (Authorization: Bearer …)")
            r.headers[.wwwAuthenticate] = "Bearer realm=\"pando-status\""
            return r
        }
        do {
            return try await next(request, context)
        } catch let e as HTTPError {
            throw e
        } catch {
            // The ledger could not be read (a disk error): say so without taking the listener down.
            server.logger.error("status request failed: \(error)")
            return StatusServer.error(.serviceUnavailable, "the coordinator's state could not be read")
        }
    }
}

/// The last document and when it was made: one rebuild per interval whatever the request rate.
final class Snapshot: @unchecked Sendable {
    private let lock = NSLock()
    private var cached: (Date, StatusDocument)?
    let interval: TimeInterval
    init(interval: TimeInterval) { self.interval = interval }

    func value(_ make: () throws -> StatusDocument) throws -> StatusDocument {
        lock.lock()
        defer { lock.unlock() }
        if let (at, document) = cached, Date().timeIntervalSince(at) < interval { return document }
        let document = try make()
        cached = (Date(), document)
        return document
    }
}
