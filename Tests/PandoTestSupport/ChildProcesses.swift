import Foundation
import XCTest

/// Crash tests run parts of a federation as separate processes: this test binary,
/// re-run to execute one test method (an entry point that reads its job from `environment`).
public enum ChildProcesses {
    /// This `.xctest` binary, or a skip when the tests do not run from one.
    public static func testBinary() throws -> URL {
        #if os(Linux)
        let binary = URL(fileURLWithPath: CommandLine.arguments[0])
        guard binary.lastPathComponent.hasSuffix(".xctest") else { throw XCTSkip("not run from an .xctest binary: \(binary.path)") }
        return binary
        #else
        throw XCTSkip("child processes are used on Linux only")
        #endif
    }

    /// Starts `binary` running the single test `test` ("Target.Class/testMethod") with `environment`
    /// added to this process's; its output is discarded.
    public static func start(_ binary: URL, test: String, environment: [String: String]) throws -> Process {
        let child = Process()
        child.executableURL = binary
        child.arguments = [test]
        child.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        return child
    }

    /// A TCP socket listening on 127.0.0.1 on a port the system chose: (descriptor, port).
    /// Close the descriptor to free the port (tests that need a known free port do so at once).
    public static func loopbackListener() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 1) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard fd >= 0, ok else {
            if fd >= 0 { close(fd) }
            throw XCTSkip("cannot listen on 127.0.0.1")
        }
        return (fd, Int(UInt16(bigEndian: addr.sin_port)))
    }
}
