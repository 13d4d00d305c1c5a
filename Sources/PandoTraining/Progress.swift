import Foundation

/// Training progress for a person: a redrawn bar on a terminal, plain log
/// lines otherwise. It is only ever given numbers and file names, never text
/// from the data.
public final class ProgressReporter {
    public enum Style: Sendable { case bar, lines }

    public let style: Style
    private let write: (String) -> Void
    private var barVisible = false
    private var lastLoggedStep = -1

    /// - Parameter write: receives output chunks (lines end in "\n"; the bar uses "\r").
    public init(style: Style, write: @escaping (String) -> Void) {
        self.style = style
        self.write = write
    }

    /// Writes to standard error: a bar when it is a terminal, lines otherwise.
    public static func standardError() -> ProgressReporter {
        ProgressReporter(style: isatty(STDERR_FILENO) != 0 ? .bar : .lines) { s in
            FileHandle.standardError.write(Data(s.utf8))
        }
    }

    /// A silent reporter.
    public static var silent: ProgressReporter { ProgressReporter(style: .lines) { _ in } }

    /// A whole log line.
    public func log(_ line: String) {
        if barVisible { write("\r\u{1B}[K"); barVisible = false }
        write(line + "\n")
    }

    /// One training step of an epoch.
    public func step(epoch: Int, epochs: Int, step: Int, steps: Int, loss: Double, tokensPerSecond: Double, learningRate: Float) {
        let stats = String(format: "loss %.4f  %.0f tok/s  lr %.2e", loss, tokensPerSecond, learningRate)
        switch style {
        case .bar:
            let width = 24
            let filled = steps == 0 ? width : width * step / steps
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            write("\r\u{1B}[Kepoch \(epoch)/\(epochs) \(bar) \(step)/\(steps)  \(stats)")
            barVisible = true
            if step == steps { write("\n"); barVisible = false }
        case .lines:
            let every = max(1, steps / 10)
            if step == steps || step % every == 0, step != lastLoggedStep {
                lastLoggedStep = step
                write("epoch \(epoch)/\(epochs) step \(step)/\(steps)  \(stats)\n")
            }
        }
    }
}
