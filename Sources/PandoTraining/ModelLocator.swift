import Foundation

/// Finds the model folder a command should use.
public enum ModelLocator {
    public struct NotFound: Error, CustomStringConvertible {
        public let description: String
    }

    /// `explicit` if given; else `$PANDO_MODEL`; else `./models/default`
    /// (the link deploy/bootstrap makes).
    public static func resolve(_ explicit: String?) throws -> URL {
        if let explicit { return URL(fileURLWithPath: explicit) }
        if let env = ProcessInfo.processInfo.environment["PANDO_MODEL"], !env.isEmpty { return URL(fileURLWithPath: env) }
        let local = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("models/default")
        if FileManager.default.fileExists(atPath: local.appendingPathComponent("config.json").path) { return local }
        throw NotFound(description: "no model folder: pass --model DIR, set PANDO_MODEL, or run deploy/bootstrap to link models/default")
    }
}
