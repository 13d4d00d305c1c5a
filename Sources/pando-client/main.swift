import ArgumentParser
import Foundation
import Logging
import PandoServices

/// `pando-client --config school.yaml`: one school's on-premises agent.
@main
struct ClientCommand: AsyncParsableCommand {
    /// OpenBLAS's environment is set first, while the program is still single-threaded.
    static func main() async {
        ServiceConsole.prepareKernels()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "pando-client",
        abstract: "Take part in a federation: train on this school's data, send only weight deltas.",
        discussion: """
        Reads the school's YAML configuration (see deploy/examples/school.yaml), loads and checks \
        its data against the federation's label set, then dials out to the coordinator over \
        mutual TLS and answers its rounds until stopped: fetch the global version by hash, \
        fine-tune locally, send the delta, log what was sent to the school's own log. The data \
        never leaves this machine. Reconnects with backoff if the connection drops.

        SIGTERM or SIGINT stops it cleanly: the agent is cancelled and its connection closes (the \
        coordinator leaves the school out of an open round and records why), and the process exits 0; a \
        second signal exits at once with 128 + the signal number. Logs go to standard error, one line per \
        event, in --log-format (journald under systemd, json for log collectors); never student text.

        Exit status: 0 a clean stop on SIGTERM/SIGINT; 1 a failure while running (gave up after \
        --max-attempts failed connections, the school's log could not be written); 64 a bad option, \
        configuration file or data set; 130 / 143 a second SIGINT / SIGTERM during the stop.
        """)

    @Option(help: "The school's configuration file (YAML).") var config: String
    @Option(help: "Give up after this many failed connection attempts in a row (default: never).") var maxAttempts: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: Logger.Level = .info
    @Option(help: "Log lines: journald (<N> syslog priority prefix), json (one object per line: time, level, logger, event), console; auto: journald when standard error is the journal (JOURNAL_STREAM), else console.")
    var logFormat: LogFormat = .auto

    func run() async throws {
        ServiceConsole.bootstrap(level: logLevel, format: logFormat)
        ServiceConsole.announceKernels(Logger(label: "pando.client"))
        let configuration: SchoolConfiguration
        let agent: SchoolAgent
        do {
            configuration = try SchoolConfiguration.load(from: URL(fileURLWithPath: config))
            agent = try SchoolAgent(configuration: configuration, logger: Logger(label: "pando.client"))
        } catch {
            throw failed(error, status: .validationFailure)
        }
        say("data: \(agent.trainingExamples) training and \(agent.validationExamples) validation examples; "
              + "coordinator \(configuration.transport.coordinatorHost):\(configuration.transport.port); "
              + "own log \(configuration.log.path)")
        agent.onEvent = { event in
            switch event {
            case .connected: say("connected")
            case .assignment(let round, let task): say("round \(round): \(task.rawValue)")
            case .training(let round, let fraction): say(String(format: "round %d: training %.0f%%", round, fraction * 100))
            case .fetched(let round, let bytes, let cached):
                say(cached ? "round \(round): global version already cached" : "round \(round): fetched the global version (\(bytes) bytes)")
            case .trained(let round, let examples, let metrics):
                say(String(format: "round %d: trained on %d examples, loss %.4f, %.1f s", round, examples,
                             metrics["train_loss"] ?? .nan, metrics["seconds"] ?? 0))
            case .sent(let round, let bytes): say("round \(round): update sent (\(bytes) bytes)")
            case .evaluated(let round, let examples, let metrics):
                let shown = ["accuracy", "macro_f1", "micro_f1", "rmse"].compactMap { k in metrics[k].map { String(format: "%@ %.4f", k, $0) } }
                say("round \(round): evaluated on \(examples) validation examples: \(shown.joined(separator: ", "))")
            case .declined(let round, let reason): say("round \(round): declined: \(reason)")
            }
        }
        let maxAttempts = self.maxAttempts
        let running = Task { try await agent.run(maxAttempts: maxAttempts) }
        ServiceSignals.install { signal in
            say("\(signal): stopping (the connection closes; the coordinator leaves this school out of an open round)")
            running.cancel()
        }
        do { try await running.value } catch is CancellationError {
            say("stopped")
        } catch {
            throw failed(error, status: .failure)
        }
    }
}

/// Logs why the service stops (one event in the chosen log format) and gives the documented
/// exit status: 64 for a bad configuration or data set, 1 for a failure while running.
func failed(_ error: Error, status: ExitCode) -> ExitCode {
    Logger(label: "pando.client").critical("stopping: \(error)")
    return status
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension LogFormat: ExpressibleByArgument {}

func say(_ line: String) { ServiceConsole.say(line) }
