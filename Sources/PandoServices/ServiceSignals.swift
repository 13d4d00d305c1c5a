import Dispatch
import Foundation

/// SIGTERM and SIGINT for the long-running services: the first asks for a clean stop (the
/// coordinator aborts its open round and records it; a school says goodbye), a second one
/// ends the process at once with the conventional 128 + signal status.
public enum ServiceSignals {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []
    private static let lock = NSLock()
    nonisolated(unsafe) private static var received = 0

    /// Installs the handlers; `stop` is called once, on a background queue, with "SIGTERM" or "SIGINT".
    public static func install(_ stop: @escaping @Sendable (String) -> Void) {
        for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
            signal(number, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                let count = lock.withLock { () -> Int in received += 1; return received }
                if count == 1 {
                    stop(name)
                } else {
                    exit(128 + number)
                }
            }
            source.resume()
            lock.withLock { sources.append(source) }
        }
    }
}
