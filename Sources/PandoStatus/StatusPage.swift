import Foundation
import PandoLedger
import PandoServices

/// The status page: one self-contained HTML document rendered on the server from a
/// `StatusDocument` (inline CSS and SVG; no scripts, no external fonts or images). Every
/// identifier is HTML-escaped; there is no text of the schools' data to show.
/// Elements carry ids and `data-` attributes so tools (and the tests) can find them.
enum StatusPage {
    /// Metric names plotted or put in attributes: what `[A-Za-z0-9_.-]{1,64}` allows.
    static func isIdentifier(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 64 && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }
    }

    static func e(_ s: String) -> String { SVGPlot.escape(s) }

    static func number(_ v: Double?, digits: Int = 4) -> String {
        guard let v, v.isFinite else { return "–" }
        return String(format: "%.\(digits)f", v)
    }

    static func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var v = Double(n), i = 0
        while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }

    static func render(_ d: StatusDocument) -> String {
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta http-equiv="refresh" content="10">
        <title>Pando · \(e(d.federation.id))</title>
        <style>
        body{font-family:sans-serif;margin:1.5em;color:#222}
        table{border-collapse:collapse;margin:.5em 0 1.5em}
        th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-variant-numeric:tabular-nums}
        th{background:#f3f3f3}
        .ok{color:#1e7d32}.off{color:#999}.bad{color:#b00020}
        code{font-size:.9em}
        .plots svg{margin-right:1em}
        </style></head><body>

        """
        let f = d.federation
        h += """
        <h1>Pando federation <span id="federation-id">\(e(f.id))</span></h1>
        <section id="federation"><table>
        <tr><th>task</th><td id="task">\(e(f.task))</td></tr>
        <tr><th>labels</th><td id="labels">\(f.labels.map { "<code class=\"label\">\(e($0))</code>" }.joined(separator: " "))</td></tr>
        <tr><th>head version</th><td id="head-version"><code>\(e(f.headVersion ?? "–"))</code></td></tr>
        <tr><th>rounds</th><td>\(d.rounds.filter { $0.outcome == .committed }.count) committed, \(d.rounds.filter { $0.outcome == .aborted }.count) aborted, \(f.roundsPlanned) planned</td></tr>
        <tr><th>schools' port</th><td>\(f.port.map(String.init) ?? "not listening")</td></tr>
        <tr><th>generated</th><td>\(e(d.generatedAt))</td></tr>
        </table></section>

        """
        // Schools.
        h += "<h2>Schools</h2>\n<table id=\"schools\"><tr><th>school</th><th>connected</th><th>last seen</th><th>activity</th><th>progress</th><th>heartbeats</th><th>rounds selected</th><th>rounds in aggregate</th><th>rounds evaluated</th><th>left out (reason × rounds)</th></tr>\n"
        for s in d.schools {
            let left = s.leftOut.sorted { $0.key < $1.key }.map { "\(e($0.key)) × \($0.value)" }.joined(separator: ", ")
            h += "<tr class=\"school\" data-school=\"\(e(s.id))\" data-connected=\"\(s.connected)\"><td>\(e(s.id))</td>"
            h += "<td class=\"\(s.connected ? "ok" : "off")\">\(s.connected ? "yes" : "no")</td><td>\(e(s.lastSeen ?? "–"))</td>"
            h += "<td>\(e(s.activity ?? "–"))</td><td>\(s.progress.map { String(format: "%.0f%%", $0 * 100) } ?? "–")</td><td>\(s.heartbeats)</td>"
            h += "<td>\(s.roundsSelected)</td><td>\(s.roundsAccepted)</td><td>\(s.roundsEvaluated)</td><td>\(left.isEmpty ? "–" : left)</td></tr>\n"
        }
        h += "</table>\n"
        // Round in progress.
        h += "<h2>Round in progress</h2>\n<section id=\"round-in-progress\">"
        if let r = d.round {
            h += "<table><tr><th>round</th><td id=\"active-round\">\(r.round.map(String.init) ?? "not started")</td></tr>"
            h += "<tr><th>stage</th><td id=\"active-stage\" data-stage=\"\(e(r.stage))\">\(e(r.stage)) (\(number(r.stageSeconds, digits: 1)) s)</td></tr>"
            h += "<tr><th>started</th><td>\(e(r.startedAt))</td></tr>"
            h += "<tr><th>selected</th><td>\(r.selected.map(e).joined(separator: ", "))</td></tr>"
            h += "<tr><th>updates accepted</th><td>\(r.accepted)</td></tr>"
            let left = r.leftOut.sorted { $0.key < $1.key }.map { "\(e($0.key)) (\(e($0.value)))" }.joined(separator: ", ")
            h += "<tr><th>left out</th><td>\(left.isEmpty ? "–" : left)</td></tr></table>"
        } else {
            h += "<p>none</p>"
        }
        h += "</section>\n"
        // Plots.
        h += "<h2>Federated evaluation per round</h2>\n<section class=\"plots\" id=\"plots\">"
        let metrics = d.plottedMetrics.prefix(4)
        if metrics.isEmpty { h += "<p>no evaluated round yet</p>" }
        for metric in metrics {
            let svg = SVGPlot.rounds(d.series(metric), reference: nil, metric: metric, title: "federated \(metric) per round",
                                     axis: "federated \(metric)", series: "schools' validation data")
            h += svg.replacingOccurrences(of: "<svg ", with: "<svg class=\"metric-plot\" data-metric=\"\(e(metric))\" ", options: [], range: svg.range(of: "<svg "))
        }
        h += "</section>\n"
        // Past rounds.
        let columns = d.plottedMetrics
        h += "<h2>Rounds</h2>\n<table id=\"rounds\"><tr><th>round</th><th>outcome</th><th>version</th><th>accepted / selected</th><th>examples</th><th>train loss</th>"
        h += columns.map { "<th>\(e($0))</th>" }.joined() + "<th>evaluation examples</th><th>bytes up</th><th>bytes down</th><th>seconds</th><th>stages (s)</th></tr>\n"
        for r in d.rounds.reversed() {
            let stages = CoordinatorMonitor.Stage.allCases.map(\.rawValue).compactMap { s in r.stageSeconds[s].map { "\(s) \(number($0, digits: 1))" } }.joined(separator: ", ")
            h += "<tr class=\"round\" data-round=\"\(r.round)\" data-outcome=\"\(r.outcome.rawValue)\"><td>\(r.round)</td>"
            h += "<td class=\"\(r.outcome == .committed ? "ok" : "bad")\">\(r.outcome.rawValue)</td><td><code>\(e(r.version.map { String($0.prefix(12)) } ?? "–"))</code></td>"
            h += "<td>\(r.accepted) / \(r.selected)</td><td>\(r.examples)</td><td>\(number(r.trainLoss))</td>"
            h += columns.map { "<td class=\"metric\" data-metric=\"\(e($0))\">\(number(r.evaluation[$0]))</td>" }.joined()
            h += "<td>\(r.evaluationExamples)</td><td>\(bytes(r.bytesUp))</td><td>\(bytes(r.bytesDown))</td><td>\(number(r.seconds, digits: 1))</td><td>\(stages)</td></tr>\n"
        }
        h += "</table>\n"
        // Versions.
        h += "<h2>Versions</h2>\n<table id=\"versions\"><tr><th>#</th><th>version</th><th>parent</th><th>round</th><th>created</th><th>metrics</th><th></th></tr>\n"
        for v in d.versions.reversed() {
            let m = v.metrics.sorted { $0.key < $1.key }.map { "\(e($0.key)) \(number($0.value))" }.joined(separator: ", ")
            h += "<tr class=\"version\" data-version=\"\(e(v.id))\"><td>\(v.sequence)</td><td><code>\(e(String(v.id.prefix(16))))</code></td>"
            h += "<td><code>\(e(v.parent.map { String($0.prefix(12)) } ?? "base model"))</code></td><td>\(v.round.map(String.init) ?? "–")</td>"
            h += "<td>\(e(v.createdAt))</td><td>\(m.isEmpty ? "–" : m)</td><td>\(v.head ? "<strong>HEAD</strong>" : "")\(v.pruned ? " pruned" : "")</td></tr>\n"
        }
        h += "</table>\n"
        h += "<h2>Audit log</h2>\n<p id=\"audit-head\" data-records=\"\(d.audit.records)\">\(d.audit.records) signed records; last record's hash <code>\(e(d.audit.lastHash ?? "–"))</code> (check with <code>pando audit verify</code>)</p>\n"
        h += "<p><a href=\"/api/v1/status\">JSON</a> · <a href=\"/metrics\">metrics</a></p>\n</body></html>\n"
        return h
    }
}
