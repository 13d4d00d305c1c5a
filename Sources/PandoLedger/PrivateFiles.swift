import Foundation

/// Modes for what the coordinator and the schools keep (state, versions, uploads, deltas,
/// logs, caches): model weights trained on students' data and the records about them are
/// their owner's alone, whatever the umask. Files 0600, folders 0700.
public enum PrivateFiles {
    public static let fileMode: mode_t = 0o600
    public static let folderMode: mode_t = 0o700

    /// Creates `url` (with any missing parents) or, if it exists, tightens it: mode 0700.
    public static func folder(_ url: URL) throws {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: folderMode])
        try set(folderMode, on: url)
    }

    /// Creates `url` with mode 0700 unless it exists (a folder the caller was only told to use is left as it is).
    public static func folderIfMissing(_ url: URL) throws {
        if !FileManager.default.fileExists(atPath: url.path) { try folder(url) }
    }

    /// Sets mode 0600 on the file at `url`.
    public static func restrict(_ url: URL) throws { try set(fileMode, on: url) }

    static func set(_ mode: mode_t, on url: URL) throws {
        guard chmod(url.path, mode) == 0 else {
            throw LedgerError("\(url.path): cannot set mode 0\(String(mode, radix: 8)): \(String(cString: strerror(errno)))")
        }
    }
}
