import Foundation

/// Runs a program to completion (at most `limit` seconds, then it is killed): (status, stdout, stderr).
public enum Program {
    public static func run(_ executable: String, _ arguments: [String], stdin: Data? = nil, limit: Double = 120) throws
        -> (status: Int32, output: Data, errors: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        // stderr goes to a file, so a chatty program cannot block on a full pipe while stdout is read.
        let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("pando-program-stderr-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errorFile) }
        let out = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardError = try FileHandle(forWritingTo: errorFile)
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        let killer = DispatchWorkItem { [p] in if p.isRunning { p.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + limit, execute: killer)
        let output = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        killer.cancel()
        let errors = (try? String(contentsOf: errorFile, encoding: .utf8)) ?? ""
        return (p.terminationStatus, output, errors)
    }

    /// The path of `name` on PATH, or a failure saying what installs it (never a skip: CI
    /// runs deploy/bootstrap, which installs it).
    public static func require(_ name: String, package: String) throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw Missing(description: "\(name) is not installed: run deploy/bootstrap (it apt-installs the Debian package \(package))")
    }

    public struct Missing: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }
}
