import Foundation

/// Inline SVG charts drawn from the report data (no script, no external file).
struct Charts {
    let f: Formatter

    static let green = "#1b7a3a"
    static let red = "#b3261e"
    static let amber = "#d99100"
    static let grey = "#9aa0a6"
    static let blue = "#1565c0"

    func e(_ s: String) -> String { HTMLRenderer.escape(s) }
    func n(_ x: Double) -> String { String(format: "%.1f", x) }

    /// Stacked bars per day: succeeded, partial, failed, missed; a dot under days with drills.
    func runsPerDay(_ days: [Day]) -> String {
        let width = 720.0, height = 220.0, left = 34.0, right = 8.0, top = 10.0, bottom = 52.0
        let plotW = width - left - right, plotH = height - top - bottom
        let count = max(days.count, 1)
        let band = plotW / Double(count)
        let bar = max(1.0, band * 0.72)
        let highest = days.map { $0.succeeded + $0.partial + $0.failed + $0.missed }.max() ?? 0
        let step = max(1, Int((Double(max(highest, 1)) / 4).rounded(.up)))
        let top4 = Double(step * 4)
        func y(_ v: Double) -> Double { top + plotH - v / top4 * plotH }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(e(f.t(L.chartRuns)))\">\n"
        for i in 0...4 {
            let v = Double(step * i)
            s += "<line x1=\"\(n(left))\" y1=\"\(n(y(v)))\" x2=\"\(n(width - right))\" y2=\"\(n(y(v)))\" stroke=\"#e1e4e8\" stroke-width=\"1\"/>"
            s += "<text x=\"\(n(left - 4))\" y=\"\(n(y(v) + 3))\" font-size=\"9\" text-anchor=\"end\" fill=\"#444\">\(step * i)</text>\n"
        }
        let labelEvery = max(1, Int((Double(count) / 12).rounded(.up)))
        for (i, day) in days.enumerated() {
            let x = left + Double(i) * band + (band - bar) / 2
            var base = 0.0
            let tip = "\(f.shortDay(day.date)): \(f.t(L.succeeded)) \(day.succeeded), \(f.t(L.partial)) \(day.partial), \(f.t(L.failed)) \(day.failed), \(f.t(L.missed)) \(day.missed), \(f.t(L.legendDrills)) \(day.drills)"
            s += "<g><title>\(e(tip))</title>"
            for (value, color) in [(day.succeeded, Charts.green), (day.partial, Charts.amber), (day.failed, Charts.red), (day.missed, Charts.grey)] where value > 0 {
                let y1 = y(base + Double(value)), y0 = y(base)
                s += "<rect x=\"\(n(x))\" y=\"\(n(y1))\" width=\"\(n(bar))\" height=\"\(n(max(0.5, y0 - y1)))\" fill=\"\(color)\"/>"
                base += Double(value)
            }
            if day.drills > 0 {
                s += "<circle cx=\"\(n(x + bar / 2))\" cy=\"\(n(top + plotH + 8))\" r=\"3\" fill=\"\(Charts.blue)\"/>"
            }
            s += "</g>\n"
            if i % labelEvery == 0 {
                s += "<text x=\"\(n(x + bar / 2))\" y=\"\(n(top + plotH + 22))\" font-size=\"9\" text-anchor=\"middle\" fill=\"#444\">\(e(f.shortDay(day.date)))</text>\n"
            }
        }
        s += "<line x1=\"\(n(left))\" y1=\"\(n(top + plotH))\" x2=\"\(n(width - right))\" y2=\"\(n(top + plotH))\" stroke=\"#555\" stroke-width=\"1\"/>\n"
        var lx = left
        let legendY = height - 8
        for (label, color) in [(L.succeeded, Charts.green), (L.partial, Charts.amber), (L.failed, Charts.red), (L.missed, Charts.grey)] {
            s += "<rect x=\"\(n(lx))\" y=\"\(n(legendY - 8))\" width=\"9\" height=\"9\" fill=\"\(color)\"/><text x=\"\(n(lx + 12))\" y=\"\(n(legendY))\" font-size=\"9.5\" fill=\"#222\">\(e(f.t(label)))</text>\n"
            lx += 14 + Double(f.t(label).count) * 5.6 + 14
        }
        s += "<circle cx=\"\(n(lx + 4))\" cy=\"\(n(legendY - 3.5))\" r=\"3\" fill=\"\(Charts.blue)\"/><text x=\"\(n(lx + 12))\" y=\"\(n(legendY))\" font-size=\"9.5\" fill=\"#222\">\(e(f.t(L.legendDrills)))</text>\n"
        s += "</svg>\n"
        return s
    }

    /// One row per dataset: a measured value against its objective, on a scale from 0 to twice
    /// the objective (the dashed line); longer values are cut at the edge and marked.
    func objectiveBars(_ rows: [(label: String, value: Double?, second: Double?, objective: Double, limit: Double, missing: String)], objectiveName: String, secondName: String?) -> String {
        let width = 720.0, rowH = 26.0, top = 18.0, labelW = 176.0, barX = 184.0, barW = 300.0
        let height = top + Double(max(rows.count, 1)) * rowH + (secondName == nil ? 6 : 22)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(e(objectiveName))\">\n"
        let mark = barX + barW / 2
        s += "<text x=\"\(n(mark))\" y=\"11\" font-size=\"9\" text-anchor=\"middle\" fill=\"#333\">\(e(objectiveName))</text>\n"
        s += "<text x=\"\(n(barX + barW))\" y=\"11\" font-size=\"9\" text-anchor=\"end\" fill=\"#777\">2×</text>\n"
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * rowH
            let label = r.label.count > 30 ? String(r.label.prefix(29)) + "…" : r.label
            s += "<text x=\"\(n(labelW))\" y=\"\(n(y + 12))\" font-size=\"9.5\" text-anchor=\"end\" fill=\"#222\">\(e(label))</text>\n"
            s += "<rect x=\"\(n(barX))\" y=\"\(n(y + 3))\" width=\"\(n(barW))\" height=\"12\" fill=\"#f1f3f5\"/>"
            if let value = r.value {
                let ratio = min(value / max(r.objective, 0.001), 2)
                let color = value <= r.limit ? Charts.green : Charts.red
                s += "<rect x=\"\(n(barX))\" y=\"\(n(y + 3))\" width=\"\(n(max(1.5, ratio / 2 * barW)))\" height=\"12\" fill=\"\(color)\"><title>\(e(r.label))</title></rect>"
                if value > 2 * r.objective {
                    s += "<text x=\"\(n(barX + barW - 3))\" y=\"\(n(y + 13))\" font-size=\"10\" text-anchor=\"end\" fill=\"#fff\">»</text>"
                }
                if let second = r.second {
                    let ratio2 = min(second / max(r.objective, 0.001), 2)
                    s += "<rect x=\"\(n(barX))\" y=\"\(n(y + 17))\" width=\"\(n(max(1.5, ratio2 / 2 * barW)))\" height=\"4\" fill=\"\(second <= r.limit ? "#4f8f63" : "#d46a63")\"><title>\(e(f.duration(second)))</title></rect>"
                }
                let text = "\(f.duration(value)) / \(f.duration(r.objective))"
                s += "<text x=\"\(n(barX + barW + 8))\" y=\"\(n(y + 13))\" font-size=\"9.5\" fill=\"\(color)\">\(e(text))</text>\n"
            } else {
                s += "<text x=\"\(n(barX + 6))\" y=\"\(n(y + 13))\" font-size=\"9.5\" fill=\"\(Charts.red)\" font-weight=\"bold\">\(e(r.missing))</text>\n"
            }
        }
        let bottom = top + Double(rows.count) * rowH
        s += "<line x1=\"\(n(mark))\" y1=\"14\" x2=\"\(n(mark))\" y2=\"\(n(bottom))\" stroke=\"#333\" stroke-width=\"1\" stroke-dasharray=\"3 2\"/>\n"
        if let secondName {
            s += "<rect x=\"\(n(barX))\" y=\"\(n(bottom + 6))\" width=\"16\" height=\"4\" fill=\"#4f8f63\"/><text x=\"\(n(barX + 22))\" y=\"\(n(bottom + 12))\" font-size=\"9\" fill=\"#333\">\(e(secondName))</text>\n"
        }
        s += "</svg>\n"
        return s
    }

    func freshness(_ datasets: [Dataset]) -> String {
        objectiveBars(datasets.map { d in
            (d.key, d.backups.ageAtEndSeconds, d.backups.worstRpoSeconds, d.objectives.rpoSeconds,
             d.objectives.rpoSeconds + d.objectives.rpoToleranceSeconds, f.t(L.chartNoBackup))
        }, objectiveName: "RPO (\(f.t(L.objectiveMark)))", secondName: f.t(L.worstRpo))
    }

    func restore(_ datasets: [Dataset]) -> String {
        objectiveBars(datasets.map { d in
            (d.key, d.drills.lastRtoSeconds, nil, d.objectives.rtoSeconds, d.objectives.rtoSeconds, f.t(d.drills.done == 0 ? L.chartNoDrill : L.chartRestoreFailed))
        }, objectiveName: "RTO (\(f.t(L.objectiveMark)))", secondName: nil)
    }
}
