import Foundation
import Logging
import PandoLedger

/// How the services write log lines: one line per event, whatever the message holds.
///
/// - `console`: swift-log's stream format (`<time> <level> <label>: <message>`), for people.
/// - `journald`: `<N>label: message key=value…`, `N` the syslog priority of the level
///   (journald reads the prefix: `journalctl -p warning` filters on it).
/// - `json`: `{"event", "level", "logger", "metadata", "time"}` per line, for log collectors
///   (Loki, Fluent Bit, Vector, Elastic); `time` is ISO 8601 UTC with milliseconds.
/// - `auto`: `journald` when standard error is the journal's stream (systemd sets
///   `JOURNAL_STREAM` to its device:inode), else `console`.
///
/// Messages are the services' own words: counts, ids, hashes and reasons, never student text.
/// Control and format characters (a newline in an error from a hostile peer) are escaped, so
/// an event is always exactly one line.
public enum LogFormat: String, CaseIterable, Sendable {
    case auto, console, journald, json

    /// `auto` resolved: journald when `JOURNAL_STREAM` names the file open on `descriptor`.
    public func resolved(environment: [String: String] = ProcessInfo.processInfo.environment,
                         descriptor: Int32 = STDERR_FILENO) -> LogFormat {
        guard self == .auto else { return self }
        guard let stream = environment["JOURNAL_STREAM"] else { return .console }
        var st = stat()
        guard fstat(descriptor, &st) == 0 else { return .console }
        return stream == "\(st.st_dev):\(st.st_ino)" ? .journald : .console
    }

    /// The syslog priority journald files a level under.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// One event as one line (no newline at the end); `console` is left to swift-log's stream
    /// handler and gets the journald form here.
    public func line(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata = [:], date: Date = Date()) -> String {
        switch self {
        case .json:
            var object: [String: Any] = [
                "time": Self.timestamp(date), "level": level.rawValue, "logger": label, "event": message,
            ]
            if !metadata.isEmpty { object["metadata"] = metadata.mapValues { "\($0)" } }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            // JSONSerialization escapes the C0 controls; U+2028/U+2029 are legal in JSON but split lines for some readers.
            return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\u{2028}", with: "\\u2028")
                .replacingOccurrences(of: "\u{2029}", with: "\\u2029")
        case .journald, .auto, .console:
            let fields = metadata.sorted { $0.key < $1.key }.map { " \(TerminalText.safe($0.key))=\(TerminalText.safe("\($0.value)"))" }.joined()
            return "<\(Self.priority(level))>\(TerminalText.safe(label)): \(TerminalText.safe(message))\(fields)"
        }
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }
}

/// A swift-log handler writing `LogFormat` lines (journald or JSON) to a file descriptor,
/// each line with one write.
public struct ServiceLogHandler: LogHandler {
    public let label: String
    public let format: LogFormat
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let descriptor: Int32

    public init(label: String, format: LogFormat, level: Logger.Level, descriptor: Int32 = STDERR_FILENO) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.descriptor = descriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        ServiceLogHandler.write(format.line(level: event.level, label: label, message: "\(event.message)", metadata: merged), to: descriptor)
    }

    static let lock = NSLock()

    /// Writes `line` and a newline with one write(2) call (retried for a partial write).
    static func write(_ line: String, to descriptor: Int32) {
        var bytes = Array((line + "\n").utf8)
        lock.withLock {
            bytes.withUnsafeMutableBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = Foundation.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0 { if errno == EINTR { continue }; return }
                    offset += n
                }
            }
        }
    }
}
