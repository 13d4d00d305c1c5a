import Foundation
import Logging

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

    /// Prints a line and flushes.
    public static func say(_ line: String) {
        print(line)
        fflush(nil)
    }
}
