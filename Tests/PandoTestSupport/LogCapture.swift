import Foundation
import Logging

/// Collects log lines so tests can assert on logged reasons (and on what is never logged).
/// `PANDO_TEST_LOG=1` also prints them.
public final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []

    public init() {}

    public var lines: [String] { lock.withLock { stored } }
    public func append(_ s: String) { lock.withLock { stored.append(s) } }
    public func contains(_ needle: String) -> Bool { lines.contains { $0.contains(needle) } }

    /// A logger at `trace` level writing into this capture.
    public func logger(_ label: String) -> Logger {
        Logger(label: label) { _ in Handler(capture: self) }
    }

    /// Number of lines so far: pass it to `waitFor(_:after:)` to look only at later lines.
    public var mark: Int { lock.withLock { stored.count } }

    /// Whether a line logged at index `after` or later contains every string in `needles`.
    public func contains(all needles: [String], after: Int) -> Bool {
        lines.dropFirst(after).contains { line in needles.allSatisfy { line.contains($0) } }
    }

    /// Polls until a line contains `needle`.
    public func waitFor(_ needle: String, timeout: Double = 5) async -> Bool {
        await waitFor([needle], after: 0, timeout: timeout)
    }

    /// Polls until one line logged at index `after` or later contains every string in `needles`.
    public func waitFor(_ needles: [String], after: Int, timeout: Double = 5) async -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if contains(all: needles, after: after) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return contains(all: needles, after: after)
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String,
                 file: String, function: String, line: UInt) {
            let md = self.metadata.merging(extra ?? [:]) { $1 }.map { "\($0)=\($1)" }.sorted().joined(separator: " ")
            capture.append("[\(level)] \(message) \(md)")
            if ProcessInfo.processInfo.environment["PANDO_TEST_LOG"] != nil { print("[\(level)] \(message) \(md)") }
        }
    }
}
