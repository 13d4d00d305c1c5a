import Foundation

/// A small line chart of a metric per round, as a standalone SVG document (no scripts, no
/// external fonts): `pando simulate`'s plot and the coordinator's status page.
public enum SVGPlot {
    /// `values[0]` is the base model (round 0); `reference` is drawn as a dashed line (centralized).
    /// A non-finite value (a round without the metric) leaves a gap in the points.
    /// `axis` names the y axis (default `test <metric>`); `series` labels the line; `footnote`
    /// (bytes moved, say) is a line under the chart.
    public static func rounds(_ values: [Double], reference: Double?, metric: String, title: String, axis: String? = nil,
                              series: String = "federated (global model)", footnote: String? = nil) -> String {
        let width = 640.0, height = footnote == nil ? 400.0 : 420.0, left = 64.0, right = 24.0, top = 44.0
        let bottom = footnote == nil ? 52.0 : 72.0
        let finite = values.filter(\.isFinite) + (reference.map { [$0] } ?? [])
        var lo = finite.min() ?? 0, hi = finite.max() ?? 1
        if metric != "rmse" && metric != "mae" && metric != "loss" { lo = min(lo, 0); hi = max(hi, 1) }
        if hi - lo < 1e-9 { hi = lo + 1 }
        let n = max(values.count - 1, 1)
        func x(_ i: Int) -> Double { left + (width - left - right) * Double(i) / Double(n) }
        func y(_ v: Double) -> Double { top + (height - top - bottom) * (1 - (v - lo) / (hi - lo)) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(f(width / 2))" y="24" text-anchor="middle" font-size="15">\(escape(title))</text>

        """
        // Axes, grid and ticks.
        svg += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        svg += "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        for k in 0...5 {
            let v = lo + (hi - lo) * Double(k) / 5
            svg += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(width - right))\" y2=\"\(f(y(v)))\" stroke=\"#ddd\"/>\n"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y(v) + 4))\" text-anchor=\"end\">\(String(format: "%.2f", v))</text>\n"
        }
        for i in 0...n where values.count > 1 {
            svg += "<text x=\"\(f(x(i)))\" y=\"\(f(height - bottom + 18))\" text-anchor=\"middle\">\(i)</text>\n"
        }
        svg += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(f(height - bottom + 36))\" text-anchor=\"middle\">round (0 = base model)</text>\n"
        if let footnote {
            svg += "<text x=\"\(f(width / 2))\" y=\"\(f(height - 10))\" text-anchor=\"middle\" font-size=\"10\" fill=\"#555\">\(escape(footnote))</text>\n"
        }
        svg += "<text x=\"16\" y=\"\(f((top + height - bottom) / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(f((top + height - bottom) / 2)))\">\(escape(axis ?? "test \(metric)"))</text>\n"
        if let reference, reference.isFinite {
            svg += "<line x1=\"\(f(left))\" y1=\"\(f(y(reference)))\" x2=\"\(f(width - right))\" y2=\"\(f(y(reference)))\" stroke=\"#c0392b\" stroke-dasharray=\"6 4\"/>\n"
            svg += "<text x=\"\(f(width - right - 4))\" y=\"\(f(y(reference) - 6))\" text-anchor=\"end\" fill=\"#c0392b\">centralized \(String(format: "%.3f", reference))</text>\n"
        }
        let points = values.enumerated().filter { $0.element.isFinite }.map { "\(f(x($0.offset))),\(f(y($0.element)))" }
        svg += "<polyline points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"#2471a3\" stroke-width=\"2\"/>\n"
        for (i, v) in values.enumerated() where v.isFinite {
            svg += "<circle cx=\"\(f(x(i)))\" cy=\"\(f(y(v)))\" r=\"3.5\" fill=\"#2471a3\"><title>round \(i): \(String(format: "%.4f", v))</title></circle>\n"
        }
        svg += "<text x=\"\(f(left + 8))\" y=\"\(f(top + 14))\" fill=\"#2471a3\">\(escape(series))</text>\n"
        return svg + "</svg>\n"
    }

    /// Text and attribute values escaped for XML and HTML (`& < > " '`).
    public static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;").replacingOccurrences(of: "'", with: "&#39;")
    }
}
