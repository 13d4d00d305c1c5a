import ArgumentParser
import Foundation
import Logging
import PandoServices
import PandoStatus

/// `pando-coordinator --config coordinator.yaml`: the district's central service.
@main
struct CoordinatorCommand: AsyncParsableCommand {
    /// OpenBLAS's environment is set first, while the program is still single-threaded.
    static func main() async {
        ServiceConsole.prepareKernels()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "pando-coordinator",
        abstract: "Run federated rounds for the schools that connect (mutual TLS).",
        discussion: """
        Reads the federation's YAML configuration (see deploy/examples/coordinator.yaml), opens \
        or creates its state folder (global versions, state.sqlite, the signed audit log), listens \
        for schools, and runs the configured rounds: select connected schools, send each the head \
        version's hash and the training plan, validate and aggregate their weight deltas, commit a \
        new version when the quorum arrives by the deadline, then ask the schools to evaluate it. \
        Restarting continues the federation from its last committed version.

        SIGTERM or SIGINT stops it cleanly: the open round is aborted with the signal as its reason \
        (recorded in the audit log and state.sqlite), the schools are told, and the process exits 0; a \
        second signal exits at once with 128 + the signal number. Logs go to standard error, one line per \
        event, in --log-format (journald under systemd, json for log collectors); they hold counts, \
        identifiers, hashes and reasons, never student text.

        Exit status: 0 the configured rounds ran, or a clean stop on SIGTERM/SIGINT; 1 a failure while \
        running (the listener could not bind, the state folder could not be read or written); 64 a bad \
        option or configuration file; 130 / 143 a second SIGINT / SIGTERM during the stop.
        """)

    @Option(help: "The federation's configuration file (YAML).") var config: String
    @Option(help: "Rounds to run (overrides federation.rounds).") var rounds: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: Logger.Level = .info
    @Option(help: "Log lines: journald (<N> syslog priority prefix), json (one object per line: time, level, logger, event), console; auto: journald when standard error is the journal (JOURNAL_STREAM), else console.")
    var logFormat: LogFormat = .auto
    @Flag(help: "Create a new audit signing key when the state folder's keys/coordinator.key is lost (refused without it). That start writes a signingKeyReplaced record naming the new public key's hash; verify the log with both keys (pando audit verify --key OLD --key NEW).")
    var newSigningKey = false

    func run() async throws {
        ServiceConsole.bootstrap(level: logLevel, format: logFormat)
        ServiceConsole.announceKernels(Logger(label: "pando.coordinator"))
        var configuration: CoordinatorConfiguration
        do { configuration = try CoordinatorConfiguration.load(from: URL(fileURLWithPath: config)) } catch {
            throw failed(error, status: .validationFailure)
        }
        if let rounds {
            guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
            configuration.rounds.rounds = rounds
        }
        let settings = configuration
        let coordinator = Coordinator(configuration: settings, logger: Logger(label: "pando.coordinator"))
        coordinator.newSigningKey = newSigningKey
        coordinator.onListening = { port in say("listening on \(settings.listen):\(port) (mutual TLS)") }
        coordinator.onRound = { r in say(Self.describe(r)) }
        ServiceSignals.install { signal in
            say("\(signal): stopping (the open round is aborted and recorded; a second \(signal) exits at once)")
            coordinator.shutdown(reason: signal)
        }
        // The status page, JSON API and /metrics, on their own listener (status: in the configuration).
        let status = try settings.status.map {
            try StatusServer(settings: $0, configuration: settings, monitor: coordinator.monitor, logger: Logger(label: "pando.status"))
        }
        let statusTask = status.map { server in
            Task {
                do { try await server.run() } catch {
                    say("the status listener stopped: \(error)")
                    coordinator.shutdown(reason: "the status listener failed")
                }
            }
        }
        defer { statusTask?.cancel() }
        let reports: [FederatedRoundReport]
        do { reports = try await coordinator.run() } catch { throw failed(error, status: .failure) }
        say("done: \(reports.filter(\.committed).count) of \(reports.count) rounds committed; audit log \(configuration.stateFolder.appendingPathComponent("audit.jsonl").path)")
    }
}

extension CoordinatorCommand {
    static func describe(_ r: FederatedRoundReport) -> String {
        var parts: [String] = []
        parts.append(r.committed ? "committed \(r.version.prefix(12))" : "aborted, head stays \(r.version.prefix(12))")
        parts.append("\(r.accepted.count)/\(r.selected.count) updates accepted, \(r.examples) examples")
        let evaluation: [String] = ["accuracy", "macro_f1", "micro_f1", "rmse"].compactMap { k in
            guard let v = r.evaluation[k] else { return nil }
            return String(format: "%@ %.4f", k, v)
        }
        if !evaluation.isEmpty {
            parts.append("federated evaluation (\(r.evaluationExamples) examples): " + evaluation.joined(separator: ", "))
        }
        if !r.leftOut.isEmpty {
            let left: [String] = r.leftOut.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }
            parts.append("left out: " + left.joined(separator: ", "))
        }
        return "round \(r.round): " + parts.joined(separator: "; ")
    }
}

/// Logs why the service stops (one event in the chosen log format) and gives the documented
/// exit status: 64 for a bad configuration, 1 for a failure while running.
func failed(_ error: Error, status: ExitCode) -> ExitCode {
    Logger(label: "pando.coordinator").critical("stopping: \(error)")
    return status
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension LogFormat: ExpressibleByArgument {}

func say(_ line: String) { ServiceConsole.say(line) }
