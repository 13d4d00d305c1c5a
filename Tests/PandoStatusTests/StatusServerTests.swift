import Foundation
import PandoLedger
import PandoServices
@testable import PandoStatus
import PandoTestSupport
import XCTest

/// The status listener of a running loopback federation (three schools, tiny model): the
/// JSON API against its OpenAPI document and against what the rounds did, `/metrics`
/// through `promtool check metrics`, and the page as headless Chromium renders it.
final class StatusServerTests: XCTestCase {
    func testStatusOfARunningFederation() async throws {
        let chromium = try Program.require("chromium", package: "chromium")
        let promtool = try Program.require("promtool", package: "prometheus")
        let running = try RunningFederation()
        try await running.start(untilRounds: 2)
        do {
            try await checkJSON(running)
            try await checkMetrics(running, promtool: promtool)
            try await checkPage(running, chromium: chromium)
        } catch {
            await running.stop()
            throw error
        }
        await running.stop()
    }

    func checkJSON(_ running: RunningFederation) async throws {
        let schema = try OpenAPISchema.load()
        let (status, headers, body) = try await HTTP.get(running.base.appendingPathComponent("api/v1/status"))
        XCTAssertEqual(status, 200)
        XCTAssertEqual(headers["content-type"], "application/json")
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(body), against: schema.schema("StatusDocument")), [])
        let rounds = try await HTTP.get(running.base.appendingPathComponent("api/v1/rounds"))
        XCTAssertEqual(rounds.status, 200)
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(rounds.body), against: ["type": "array", "items": ["$ref": "#/components/schemas/RoundHistory"]]), [])

        let d = try JSONDecoder().decode(StatusDocument.self, from: body)
        XCTAssertEqual(d.federation.id, "status-federation")
        XCTAssertEqual(d.federation.labels, RunningFederation.labels)
        XCTAssertNotNil(d.federation.port)
        XCTAssertEqual(d.schools.map(\.id), RunningFederation.schools.map(\.id).sorted())
        for s in d.schools {
            XCTAssertTrue(s.connected, s.id)
            XCTAssertGreaterThan(s.heartbeats, 0, "\(s.id): heartbeats come every 200 ms")
            XCTAssertNotNil(s.lastSeen, s.id)
            XCTAssertNotNil(s.activity, s.id)
            XCTAssertGreaterThanOrEqual(s.roundsSelected, 2, s.id)
        }
        let committed = d.rounds.filter { $0.outcome == .committed }
        XCTAssertGreaterThanOrEqual(committed.count, 2)
        for r in committed {
            // What the stored figures say must add up: the aggregate's examples are the accepted
            // schools', and the federated evaluation is the example-weighted mean of theirs.
            let accepted = r.schools.filter(\.accepted)
            XCTAssertEqual(accepted.count, r.accepted)
            XCTAssertEqual(accepted.compactMap(\.trainingExamples).reduce(0, +), r.examples)
            XCTAssertEqual(r.examples, RunningFederation.schools.filter { s in accepted.contains { $0.school == s.id } }.map(\.training).reduce(0, +))
            let evaluated = r.schools.filter { $0.evaluationExamples != nil }
            XCTAssertEqual(r.evaluationExamples, evaluated.compactMap(\.evaluationExamples).reduce(0, +))
            XCTAssertEqual(r.evaluationExamples, RunningFederation.schools.map(\.validation).reduce(0, +))
            let accuracy = try XCTUnwrap(r.evaluation["accuracy"], "round \(r.round) has a federated accuracy")
            let weighted = evaluated.map { Double($0.evaluationExamples!) * $0.evaluationMetrics["accuracy"]! }.reduce(0, +) / Double(r.evaluationExamples)
            XCTAssertEqual(accuracy, weighted, accuracy: 1e-9)
            XCTAssertGreaterThan(r.bytesUp, 0)
            XCTAssertGreaterThan(r.bytesDown, 0)
            XCTAssertNotNil(r.stageSeconds["training"])
            XCTAssertNotNil(r.stageSeconds["evaluating"])
            for s in accepted { XCTAssertNotNil(s.trainingMetrics["train_loss"], "\(s.school) reported its training loss") }
            // The version the round made carries the evaluation as its metrics.
            let version = try XCTUnwrap(d.versions.first { $0.id == r.version })
            XCTAssertEqual(version.metrics, r.evaluation)
            XCTAssertEqual(version.round, r.round)
        }
        XCTAssertEqual(d.versions.count, committed.count + 1, "the base model and one version per committed round")
        XCTAssertEqual(d.versions.filter(\.head).map(\.id), [d.federation.headVersion].compactMap { $0 })
        XCTAssertGreaterThan(d.audit.records, 0)
        let plot = try await HTTP.get(running.base.appendingPathComponent("plot/accuracy.svg"))
        XCTAssertEqual(plot.status, 200)
        XCTAssertTrue(String(decoding: plot.body, as: UTF8.self).hasPrefix("<svg"))
        let missing = try await HTTP.get(running.base.appendingPathComponent("plot/nothing.svg"))
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(try schema.problems(OpenAPISchema.parse(missing.body), against: schema.response("Error")), [])
    }

    func checkMetrics(_ running: RunningFederation, promtool: String) async throws {
        let (status, headers, body) = try await HTTP.get(running.base.appendingPathComponent("metrics"))
        XCTAssertEqual(status, 200)
        XCTAssertTrue(headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") ?? false, "\(headers)")
        let check = try Program.run(promtool, ["check", "metrics"], stdin: body)
        XCTAssertEqual(check.status, 0, "promtool check metrics: \(check.errors)\(String(decoding: check.output, as: UTF8.self))")
        let text = String(decoding: body, as: UTF8.self)
        func value(_ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        XCTAssertEqual(value("pando_schools_connected"), 3)
        XCTAssertGreaterThanOrEqual(value(#"pando_rounds_total{outcome="committed"}"#) ?? 0, 2)
        XCTAssertNotNil(value(#"pando_rounds_total{outcome="aborted"}"#))
        XCTAssertGreaterThanOrEqual(value(#"pando_round_stage_duration_seconds_count{stage="training"}"#) ?? 0, 2)
        XCTAssertGreaterThanOrEqual(value("pando_round_duration_seconds_count") ?? 0, 2)
        XCTAssertGreaterThan(value("pando_update_bytes_received_total") ?? 0, 0)
        XCTAssertGreaterThan(value("pando_model_bytes_sent_total") ?? 0, 0)
        XCTAssertGreaterThanOrEqual(value("pando_update_l2_norm_count") ?? 0, 4)
        XCTAssertNotNil(value(#"pando_updates_left_out_total{reason="deadline"}"#))
        // The last committed version's metrics, against the round the JSON says it was.
        let last = try XCTUnwrap(value("pando_last_committed_round"))
        let accuracy = try XCTUnwrap(value(#"pando_last_committed_metric{metric="accuracy"}"#))
        let fetched = try await HTTP.get(running.base.appendingPathComponent("api/v1/rounds"))
        let rounds = try JSONDecoder().decode([RoundHistory].self, from: fetched.body)
        XCTAssertEqual(rounds.first { $0.round == Int(last) }?.evaluation["accuracy"], accuracy)
    }

    func checkPage(_ running: RunningFederation, chromium: String) async throws {
        let profile = running.work.appendingPathComponent("chromium-profile")
        let common = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile.path)", "--window-size=1280,1800"]
        let url = running.base.absoluteString + "/"
        let dom = try Program.run(chromium, common + ["--dump-dom", url])
        XCTAssertEqual(dom.status, 0, dom.errors)
        let html = String(decoding: dom.output, as: UTF8.self)
        func count(_ pattern: String) -> Int {
            (try? NSRegularExpression(pattern: pattern)).map { $0.numberOfMatches(in: html, range: NSRange(html.startIndex..., in: html)) } ?? 0
        }
        XCTAssertEqual(count(#"id="federation-id">status-federation<"#), 1, html)
        XCTAssertEqual(count(#"<tr class="school" data-school="(north|south|west)" data-connected="true""#), 3)
        XCTAssertGreaterThanOrEqual(count(#"<tr class="round" data-round="\d+" data-outcome="committed""#), 2)
        XCTAssertEqual(count(#"<svg class="metric-plot" data-metric="accuracy""#), 1)
        XCTAssertGreaterThanOrEqual(count(#"<polyline points="[0-9., ]+""#), 1)
        XCTAssertGreaterThanOrEqual(count(#"<tr class="version" data-version="[0-9a-f]{64}""#), 3)
        XCTAssertEqual(count(#"<p id="audit-head" data-records="\d+""#), 1)
        XCTAssertEqual(count(#"id="round-in-progress""#), 1)
        XCTAssertEqual(count("<script"), 0, "the page has no scripts")

        let shot = running.work.appendingPathComponent("status.png")
        let screenshot = try Program.run(chromium, common + ["--screenshot=\(shot.path)", url])
        XCTAssertEqual(screenshot.status, 0, screenshot.errors)
        let png = try Data(contentsOf: shot)
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "a PNG file")
        // IHDR: width and height, big-endian, at bytes 16–23.
        func be32(_ at: Int) -> Int { png[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        XCTAssertEqual(Array(png[12..<16]), Array("IHDR".utf8))
        XCTAssertEqual(be32(16), 1280)
        XCTAssertEqual(be32(20), 1800)
        XCTAssertGreaterThan(png.count, 10_000, "a rendered page, not an empty image")
        if let keep = ProcessInfo.processInfo.environment["PANDO_STATUS_SCREENSHOT"] {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(at: shot, to: URL(fileURLWithPath: keep))
        }
    }
}
