import Foundation
import Logging
import PandoEngine

/// What `pando-coordinator` and `pando-client` share on the console: log lines on
/// standard error at one level, progress lines on standard output, each flushed at once
/// (so they appear as they happen even when redirected to a file).
public enum ServiceConsole {
    /// Sends every logger's output to standard error at `level`. Call once, first.
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
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

    /// Prints a line and flushes.
    public static func say(_ line: String) {
        print(line)
        fflush(nil)
    }
}
