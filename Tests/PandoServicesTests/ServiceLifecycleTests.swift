import Foundation
import Logging
import PandoCertificates
import PandoData
import PandoEngine
import PandoLedger
@testable import PandoServices
import PandoTestSupport
import PandoTraining
import PandoTransport
import XCTest

/// The coordinator as a long-running service (issue 17, item 13): it waits for schools as
/// long as it takes, a failed round ends that round only, and SIGTERM stops it cleanly.
final class ServiceLifecycleTests: XCTestCase {
    /// `min_schools` are not connected within `wait_for_schools_seconds`: the coordinator says
    /// so and keeps waiting; the late school arrives and the round runs.
    func testKeepsWaitingForSchools() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-wait")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 1)
        config.rounds.minSchools = 4
        config.rounds.waitForSchools = .milliseconds(300)
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        try CertificateAuthority(directory: federation.certificates).issueSchool(id: "late")
        let late = TaskBox()
        federation.coordinator.onListening = { port in
            let config = federation.schoolConfiguration("late", port: port)
            late.set(Task {
                try await Task.sleep(for: .seconds(1.5))  // five wait periods late
                let agent = try SchoolAgent(configuration: config, training: try Federation.dataset(synthetic(count: 30, seed: 9)),
                                            validation: nil, logger: LogCapture().logger("late"))
                try await agent.run()
            })
        }
        let reports = try await federation.run()
        late.cancel()
        XCTAssertEqual(reports.count, 1)
        XCTAssertTrue(reports.first?.committed ?? false)
        XCTAssertTrue(reports.first?.accepted.contains("late") ?? false)
        XCTAssertTrue(logs.contains("still waiting: 3 of the 4 schools"), logs.lines.suffix(10).joined(separator: "\n"))
    }

    /// An error inside a round (here the commit observer, standing for a disk or ledger error)
    /// ends that round; the coordinator goes on with the next one.
    func testAFailedRoundDoesNotEndTheService() async throws {
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-round-error")
        let state = work.appendingPathComponent("state")
        var config = Federation.configuration(model: try TestFixtures.tinyModelFolder(), state: state, rounds: 2)
        config.rounds.federatedEvaluation = false
        let logs = LogCapture()
        let federation = try LoopbackFederation(configuration: config, schools: try Federation.schools(),
                                                workFolder: work.appendingPathComponent("run"),
                                                schoolLogFolder: state.appendingPathComponent("schools"), logger: logs.logger("e2e"))
        federation.coordinator.retryAfterFailure = .milliseconds(100)
        let calls = PortBox()
        federation.coordinator.observeCommit = { _ in
            calls.value += 1
            if calls.value == 1 { throw RoundError("disk full (injected)") }
            return [:]
        }
        let reports = try await federation.run()
        XCTAssertEqual(calls.value, 2, "the second round ran after the first failed")
        XCTAssertEqual(reports.map(\.round), [2])
        XCTAssertTrue(logs.contains("the round failed: disk full (injected)"), logs.lines.suffix(10).joined(separator: "\n"))
    }

    /// SIGTERM to a coordinator process mid-round: it aborts the round with the reason on
    /// record, says goodbye, and exits 0; nothing is left in flight.
    func testSIGTERMAbortsTheOpenRoundAndExitsCleanly() async throws {
        let fixture = try ChildCoordinatorFixture(prefix: "pando-sigterm", federationID: "signal-test") { _ in 60 }  // rounds take a while
        let child = try fixture.launch(signals: true)
        let audit = fixture.audit, state = fixture.state
        func events() -> [String] { fixture.events() }
        // Wait for a committed round, then for the next one to be under way.
        let start = Date()
        func nextRoundUnderWay() -> Bool {
            let e = events()
            return e.contains("roundCommitted") && (e.last == "schoolSelected" || e.last == "updateReceived")
        }
        while !nextRoundUnderWay(), Date().timeIntervalSince(start) < 60 {
            usleep(2000)
        }
        XCTAssertTrue(events().contains("roundCommitted"), "no round committed within 60 s: \(events())")
        kill(child.processIdentifier, SIGTERM)
        child.waitUntilExit()
        XCTAssertEqual(child.terminationReason, .exit, "SIGTERM must end the coordinator by itself, not kill it")
        XCTAssertEqual(child.terminationStatus, 0)
        let (records, _) = try AuditRecord.readAll(audit)
        let aborted = records.filter { $0.event == .roundAborted }
        XCTAssertEqual(aborted.count, 1, "\(records.map { $0.eventName ?? "" })")
        XCTAssertTrue(aborted.first?.reason?.contains("SIGTERM") ?? false, aborted.first?.reason ?? "")
        let ledger = try CoordinatorLedger(folder: state)
        defer { ledger.close() }
        XCTAssertNil(try ledger.roundInFlight())
        XCTAssertEqual(ledger.recovery.abortedRounds, [], "a restart finds nothing it has to abort")
    }

    /// The `pando-coordinator` executable itself, logging JSON: SIGTERM mid-round ends it with
    /// the documented status 0 after the round is recorded as aborted, and every line it wrote
    /// on standard error and standard output is one JSON event with time, level and event.
    func testCoordinatorExecutableExitsZeroOnSIGTERMAndLogsJSONLines() throws {
        let executable = try ChildProcesses.testBinary().deletingLastPathComponent().appendingPathComponent("pando-coordinator")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("\(executable.path) is not built (swift build builds it before swift test --skip-build)")
        }
        let fixture = try ChildCoordinatorFixture(prefix: "pando-sigterm-exe", federationID: "signal-exe") { _ in 60 }
        let out = fixture.work.appendingPathComponent("stdout"), err = fixture.work.appendingPathComponent("stderr")
        for f in [out, err] { FileManager.default.createFile(atPath: f.path, contents: nil) }
        let child = Process()
        child.executableURL = executable
        child.arguments = ["--config", fixture.configURL.path, "--log-format", "json"]
        child.standardOutput = try FileHandle(forWritingTo: out)
        child.standardError = try FileHandle(forWritingTo: err)
        try child.run()
        let start = Date()
        func underWay() -> Bool {
            let e = fixture.events()
            return e.contains("roundCommitted") && (e.last == "schoolSelected" || e.last == "updateReceived")
        }
        while !underWay(), child.isRunning, Date().timeIntervalSince(start) < 90 { usleep(2000) }
        XCTAssertTrue(underWay(), "no round under way after a committed one: \(fixture.events())")
        kill(child.processIdentifier, SIGTERM)
        let stopped = Date()
        while child.isRunning, Date().timeIntervalSince(stopped) < 60 { usleep(10_000) }
        if child.isRunning { kill(child.processIdentifier, SIGKILL) }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationReason, .exit)
        XCTAssertEqual(child.terminationStatus, 0, "the documented status of a clean stop")
        let aborted = try AuditRecord.readAll(fixture.audit).0.filter { $0.event == .roundAborted }
        XCTAssertEqual(aborted.count, 1)
        XCTAssertTrue(aborted.first?.reason?.contains("SIGTERM") ?? false)
        var events: [String] = []
        for file in [err, out] {
            let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
            XCTAssertFalse(lines.isEmpty, "\(file.lastPathComponent) is empty")
            for line in lines {
                guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                      o["time"] is String, o["level"] is String, let event = o["event"] as? String else {
                    XCTFail("\(file.lastPathComponent): not a JSON event line: \(line.prefix(200))")
                    continue
                }
                events.append(event)
            }
        }
        XCTAssertTrue(events.contains { $0.hasPrefix("SIGTERM: stopping") }, events.joined(separator: "\n"))
        XCTAssertTrue(events.contains { $0.hasPrefix("done: ") }, events.joined(separator: "\n"))
    }

    /// A configuration the coordinator cannot read: exit status 64 (what the systemd unit does not
    /// restart after), said as one JSON event like every other line.
    func testCoordinatorExecutableExits64OnABadConfigurationWithAJSONEvent() throws {
        let executable = try ChildProcesses.testBinary().deletingLastPathComponent().appendingPathComponent("pando-coordinator")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("\(executable.path) is not built (swift build builds it before swift test --skip-build)")
        }
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-bad-config")
        let config = work.appendingPathComponent("coordinator.yaml")
        try "federation: {id: x, task: classification}\nunknown_section: 1\n".write(to: config, atomically: true, encoding: .utf8)
        let r = try Program.run(executable.path, ["--config", config.path, "--log-format", "json"], limit: 60)
        XCTAssertEqual(r.status, 64)
        let lines = r.errors.split(separator: "\n")
        XCTAssertFalse(lines.isEmpty)
        let objects = lines.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        XCTAssertEqual(objects.count, lines.count, "every line a JSON event: \(r.errors)")
        XCTAssertTrue(objects.contains { $0["level"] as? String == "critical" && ($0["event"] as? String ?? "").contains(config.path) }, r.errors)
    }

    /// The `pando-client` executable: started against a coordinator that is not there (it keeps
    /// redialling), SIGTERM ends it with status 0, and every line it wrote is one JSON event.
    func testClientExecutableExitsZeroOnSIGTERMAndLogsJSONLines() throws {
        let executable = try ChildProcesses.testBinary().deletingLastPathComponent().appendingPathComponent("pando-client")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("\(executable.path) is not built (swift build builds it before swift test --skip-build)")
        }
        let work = try TestFixtures.temporaryDirectory(prefix: "pando-client-sigterm")
        let pki = work.appendingPathComponent("pki")
        let ca = try CertificateAuthority.initialise(at: pki, districtName: "client signal district")
        try ca.issueSchool(id: "east")
        let rows = synthetic(count: 40, seed: 7)
        let csv = "text,label\n" + rows.map { "\($0.text),\($0.label)" }.joined(separator: "\n") + "\n"
        try csv.write(to: work.appendingPathComponent("data.csv"), atomically: true, encoding: .utf8)
        let (held, port) = try ChildProcesses.loopbackListener()
        close(held)  // nothing listens there: the client keeps trying
        let yaml = """
        school: {data: data.csv, validation_fraction: 0.2}
        federation: {id: signal-client, task: classification, labels: [a, b], base_model: \(try TestFixtures.tinyModelFolder().path)}
        coordinator: {host: 127.0.0.1, port: \(port), server_name: localhost}
        tls: {folder: \(CertificateAuthority.schoolDirectory(pki, id: "east").path)}
        cache: cache
        """
        let config = work.appendingPathComponent("school.yaml")
        try yaml.write(to: config, atomically: true, encoding: .utf8)
        let out = work.appendingPathComponent("stdout"), err = work.appendingPathComponent("stderr")
        for f in [out, err] { FileManager.default.createFile(atPath: f.path, contents: nil) }
        let child = Process()
        child.executableURL = executable
        child.arguments = ["--config", config.path, "--log-format", "json"]
        child.standardOutput = try FileHandle(forWritingTo: out)
        child.standardError = try FileHandle(forWritingTo: err)
        try child.run()
        let start = Date()
        func started() -> Bool { ((try? String(contentsOf: out, encoding: .utf8)) ?? "").contains("training and") }
        while !started(), child.isRunning, Date().timeIntervalSince(start) < 60 { usleep(10_000) }
        XCTAssertTrue(started(), "the client did not start: \((try? String(contentsOf: err, encoding: .utf8)) ?? "")")
        usleep(300_000)  // into its dialling loop
        kill(child.processIdentifier, SIGTERM)
        let stopped = Date()
        while child.isRunning, Date().timeIntervalSince(stopped) < 30 { usleep(10_000) }
        if child.isRunning { kill(child.processIdentifier, SIGKILL) }
        child.waitUntilExit()
        XCTAssertEqual(child.terminationReason, .exit)
        XCTAssertEqual(child.terminationStatus, 0, "the documented status of a clean stop")
        var events: [String] = []
        for file in [err, out] {
            for line in try String(contentsOf: file, encoding: .utf8).split(separator: "\n") {
                guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                      o["time"] is String, o["level"] is String, let event = o["event"] as? String else {
                    XCTFail("\(file.lastPathComponent): not a JSON event line: \(line.prefix(200))")
                    continue
                }
                events.append(event)
            }
        }
        XCTAssertTrue(events.contains { $0.hasPrefix("SIGTERM: stopping") }, events.joined(separator: "\n"))
        XCTAssertFalse(events.joined().contains(rows[0].text), "no student text in the log")
    }
}
