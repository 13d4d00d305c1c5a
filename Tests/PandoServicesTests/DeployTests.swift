import Foundation
import PandoTestSupport
import XCTest

/// deploy/systemd: both units pass `systemd-analyze verify` (no warning at all) in a root
/// folder holding them, the systemd units they refer to and the executables the Debian
/// package installs, and carry the hardening the issue asks for. A unit with a misspelt
/// setting is shown to produce warnings, so the check can fail.
final class DeployTests: XCTestCase {
    static let units = ["pando-coordinator.service": "coordinator", "pando-client.service": "school"]

    /// A root folder for `systemd-analyze verify --root`: /etc/systemd/system/<units>, the
    /// system's own units (the targets ours name), stub executables in /usr/bin.
    func root(units: [String: String]) throws -> URL {
        let root = try TestFixtures.temporaryDirectory(prefix: "pando-systemd")
        let fm = FileManager.default
        let etc = root.appendingPathComponent("etc/systemd/system"), bin = root.appendingPathComponent("usr/bin")
        try fm.createDirectory(at: etc, withIntermediateDirectories: true)
        try fm.createDirectory(at: bin, withIntermediateDirectories: true)
        let system = ["/usr/lib/systemd/system", "/lib/systemd/system"].first { fm.fileExists(atPath: $0) }
        try fm.createDirectory(at: root.appendingPathComponent("usr/lib/systemd"), withIntermediateDirectories: true)
        try fm.copyItem(atPath: try XCTUnwrap(system, "no systemd unit folder on this machine"),
                        toPath: root.appendingPathComponent("usr/lib/systemd/system").path)
        for name in ["pando", "pando-coordinator", "pando-client"] {
            let stub = bin.appendingPathComponent(name)
            try Data("#!/bin/sh\n".utf8).write(to: stub)
            try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: stub.path)
        }
        for (name, text) in units { try text.write(to: etc.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return root
    }

    func unitText(_ name: String) throws -> String {
        try String(contentsOf: TestFixtures.repository.appendingPathComponent("deploy/systemd/\(name)"), encoding: .utf8)
    }

    func verify(_ units: [String: String]) throws -> (status: Int32, warnings: String) {
        let root = try root(units: units)
        defer { try? FileManager.default.removeItem(at: root) }
        let analyze = try Program.require("systemd-analyze", package: "systemd")
        let r = try Program.run(analyze, ["verify", "--root=\(root.path)"] + units.keys.sorted().map { "/etc/systemd/system/\($0)" })
        return (r.status, r.errors + String(decoding: r.output, as: UTF8.self))
    }

    func testUnitsVerifyWithoutWarnings() throws {
        var units: [String: String] = [:]
        for name in Self.units.keys { units[name] = try unitText(name) }
        let clean = try verify(units)
        XCTAssertEqual(clean.status, 0, clean.warnings)
        XCTAssertEqual(clean.warnings, "", "systemd-analyze verify warns")
        // The control: a misspelt setting and a bad value are reported.
        let broken = try verify(["pando-coordinator.service": units["pando-coordinator.service"]!
            .replacingOccurrences(of: "ProtectSystem=strict", with: "ProtectSystm=strict")
            .replacingOccurrences(of: "RestartSec=10s", with: "RestartSec=ten")])
        XCTAssertTrue(broken.warnings.contains("ProtectSystm") && broken.warnings.contains("ten"), broken.warnings)
    }

    func testUnitsCarryTheHardening() throws {
        for (name, role) in Self.units {
            var settings: [String: [String]] = [:]
            for line in try unitText(name).split(separator: "\n") where !line.hasPrefix("#") {
                guard let eq = line.firstIndex(of: "=") else { continue }
                settings[String(line[..<eq]), default: []].append(String(line[line.index(after: eq)...]))
            }
            func value(_ key: String) -> String? { settings[key]?.last }
            XCTAssertEqual(value("User"), "pando", name)
            XCTAssertEqual(value("Group"), "pando", name)
            XCTAssertEqual(value("NoNewPrivileges"), "yes", name)
            XCTAssertEqual(value("ProtectSystem"), "strict", name)
            XCTAssertEqual(value("ProtectHome"), "yes", name)
            XCTAssertEqual(value("PrivateTmp"), "yes", name)
            XCTAssertEqual(value("Restart"), "on-failure", name)
            XCTAssertEqual(value("CapabilityBoundingSet"), "", name)
            // Writable: the state folder only.
            XCTAssertEqual(settings["ReadWritePaths"], ["/var/lib/pando/\(role)"], name)
            XCTAssertEqual(value("StateDirectory"), "pando/\(role)", name)
            let binary = name.replacingOccurrences(of: ".service", with: "")
            XCTAssertEqual(value("ExecStart"), "/usr/bin/\(binary) --config /etc/pando/\(role).yaml", name)
        }
    }
}
