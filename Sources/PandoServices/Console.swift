import Foundation
import Logging
import PandoEngine

/// What `pando-coordinator` and `pando-client` share on the console: log lines on
/// standard error at one level, progress lines on standard output, each flushed at once
/// (so they appear as they happen even when redirected to a file).
public enum ServiceConsole {
    /// Sends every logger's output to standard error at `level`, in `format` (`auto`: journald
    /// lines under systemd, else the console form). Call once, first.
    public static func bootstrap(level: Logger.Level, format: LogFormat = .auto) {
        let resolved = format.resolved()
        lineFormat.withLock { $0 = resolved }
        LoggingSystem.bootstrap { label in
            if resolved == .console {
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            return ServiceLogHandler(label: label, format: resolved, level: level)
        }
    }

    /// The format `say` writes in (console: plain lines).
    static let lineFormat = LockedFormat()

    final class LockedFormat: @unchecked Sendable {
        private let lock = NSLock()
        private var value = LogFormat.console
        func withLock<T>(_ body: (inout LogFormat) -> T) -> T { lock.withLock { body(&value) } }
    }

    /// Sets OpenBLAS's environment for this CPU (nothing is loaded yet). Executables call it
    /// first thing, before any thread starts.
    public static func prepareKernels() { GEMMKernels.prepareEnvironment() }

    /// Logs which kernels this process runs: the GEMM kernel set (and why) and the element-wise
    /// and int8 builds. Loads OpenBLAS, so a missing library fails here, at start.
    public static func announceKernels(_ logger: Logger) {
        let gemm = GEMMKernels.active
        let line = "\(gemm.summary); element-wise kernels \(Elementwise.kernels), int8 kernel \(Int8Linear.kernel)"
        if gemm.isa < gemm.cpu.widestISA { logger.warning("\(line)") } else { logger.info("\(line)") }
    }

    /// Prints a line and flushes; under the journald or JSON format, as an info event of
    /// `pando.console` in that format (so standard output parses as standard error does).
    public static func say(_ line: String) {
        let format = lineFormat.withLock { $0 }
        if format == .console {
            print(line)
            fflush(nil)
        } else {
            fflush(nil)
            ServiceLogHandler.write(format.line(level: .info, label: "pando.console", message: line), to: STDOUT_FILENO)
        }
    }
}
