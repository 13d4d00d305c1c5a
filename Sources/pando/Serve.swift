import ArgumentParser
import Foundation
import Logging
import PandoEngine
import PandoServe
import PandoServices

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "HTTP inference for a fine-tuned checkpoint or a coordinator's version (Hugging Face Inference API shape).",
        discussion: """
        POST /predict {"inputs": "text"} or {"inputs": ["a", "b"]} (optional "parameters": {"top_k": N}) answers one \
        list of {"label", "score"} per input, highest first: softmax probabilities (classification), sigmoid per \
        label with "predicted" at the model's thresholds (multi-label), level probabilities with "predicted" on the \
        predicted level (ordinal), or one {"label", "score"} whose score is the value (regression). POST /embed \
        answers one L2-normalised vector per input; GET /model the task, labels, version, SHA-256 of the weights and \
        the limits; GET /healthz {"status": "ok"}.

        Concurrent requests are batched: one inference worker takes up to --max-batch sequences (and \
        --max-batch-tokens tokens) gathered within --batch-wait-ms of the first, runs them as one packed batch and \
        answers each. More than --queue sequences waiting: 503 with Retry-After. Bodies over --max-body-bytes, more \
        than --max-inputs texts or a text over --max-text-bytes: 413; a body not received within --body-timeout: 408. Malformed JSON or a wrong shape: 400 with \
        {"error"} naming the field. SIGTERM or SIGINT drains: no new connections, requests in flight are answered. \
        The access log has method, path, status, latency and input count, never a text.

        Bound to 127.0.0.1 by default; any other --host needs TLS (--tls-certificate, --tls-key), optionally a bearer \
        token (--token-file, a 0600 file, required on every path but /healthz, never logged) or client \
        certificates (--client-ca).

        Exit status: 0 after a clean stop, 64 for a bad option or model, 1 when the listener fails.
        """)

    @Option(help: "Checkpoint folder, or with --store a version (id, unique prefix, tag, head).") var model: String
    @Option(help: "A coordinator's state folder: serve a version of its checkpoint store.") var store: String?
    @Option(help: "Address to bind (loopback by default; others need TLS).") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port).") var port = 8080
    @Flag(help: "Run the int8-quantised encoder.") var int8 = false
    @Option(help: "Sequences per inference batch.") var maxBatch = 64
    @Option(help: "Tokens per inference batch.") var maxBatchTokens = 8192
    @Option(help: "Milliseconds the worker waits for more requests after the first of a batch.") var batchWaitMs = 2.0
    @Option(help: "Sequences that may wait for the worker before requests get 503.") var queue = 1024
    @Option(help: "Largest request body in bytes.") var maxBodyBytes = 1 << 20
    @Option(help: "Most texts in one request.") var maxInputs = 64
    @Option(help: "Largest text in UTF-8 bytes.") var maxTextBytes = 16 << 10
    @Option(help: "Connections served at once (more wait in the backlog).") var maxConnections = 128
    @Option(help: "Seconds a request body may take to arrive once its headers have (else 408).") var bodyTimeout = 10.0
    @Option(help: "Threads for the GEMMs and kernels (default: all cores).") var threads: Int?
    @Option(help: "TLS certificate chain (PEM).") var tlsCertificate: String?
    @Option(help: "TLS private key (PEM).") var tlsKey: String?
    @Option(help: "Bearer token file (mode 0600); clients send Authorization: Bearer <token>.") var tokenFile: String?
    @Option(help: "Require client certificates issued by this CA (PEM).") var clientCA: String?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        logging.bootstrap()
        let logger = Logger(label: "pando.serve")
        if let threads { Parallel.workers = max(1, threads) }
        ServiceConsole.announceKernels(logger)
        var settings = ServeSettings()
        settings.host = host
        settings.port = port
        settings.certificate = tlsCertificate.map { URL(fileURLWithPath: $0) }
        settings.privateKey = tlsKey.map { URL(fileURLWithPath: $0) }
        settings.tokenFile = tokenFile.map { URL(fileURLWithPath: $0) }
        settings.clientCA = clientCA.map { URL(fileURLWithPath: $0) }
        settings.limits = ServeLimits(maxBodyBytes: maxBodyBytes, maxInputs: maxInputs, maxTextBytes: maxTextBytes)
        settings.batching = .init(maxBatchSequences: maxBatch, maxBatchTokens: maxBatchTokens, maxWait: batchWaitMs / 1000, capacity: queue)
        settings.maxConnections = max(1, maxConnections)
        settings.bodyTimeout = .milliseconds(Int(max(0.001, bodyTimeout) * 1000))
        settings.handleSignals = true
        let server: InferenceServer
        do {
            try settings.validate()
            let served = try ServedModel(reference: model, store: store.map { URL(fileURLWithPath: $0) }, int8: int8, maxBatchSequences: maxBatch)
            server = try InferenceServer(model: served, settings: settings, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
        try await server.run()
    }
}

/// `--log-level` and `--log-format` of `pando serve`, as the services take them.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: Logger.Level = .info
    @Option(help: "Log lines: journald (<N> syslog priority prefix), json (one object per line: time, level, logger, event), console; auto: journald when standard error is the journal (JOURNAL_STREAM), else console.")
    var logFormat: LogFormat = .auto

    func bootstrap() { ServiceConsole.bootstrap(level: logLevel, format: logFormat) }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension LogFormat: ExpressibleByArgument {}
