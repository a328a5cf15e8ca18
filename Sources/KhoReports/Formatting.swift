import Foundation
import KhoCore
import KhoSources
import KhoCatalog

/// Numbers, times and durations written the way each language writes them: Vietnamese uses a
/// decimal comma and a dot between thousands, and day/month/year dates. Deterministic (no
/// locale lookups), so that a report rendered twice from the same data is the same bytes.
struct Formatter {
    let language: ReportLanguage
    let calendar: Calendar

    init(language: ReportLanguage, timeZone: String) {
        self.language = language
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: timeZone) ?? ReportScope.defaultTimeZone
        self.calendar = calendar
    }

    var vi: Bool { language == .vi }

    func t(_ text: Text) -> String { text(language) }

    private func parts(_ date: Date) -> DateComponents {
        calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
    }

    /// 29/11/2026 13:48 or 2026-11-29 13:48.
    func dateTime(_ date: Date?) -> String {
        guard let date else { return "—" }
        let c = parts(date)
        return vi ? String(format: "%02d/%02d/%04d %02d:%02d", c.day!, c.month!, c.year!, c.hour!, c.minute!)
                  : String(format: "%04d-%02d-%02d %02d:%02d", c.year!, c.month!, c.day!, c.hour!, c.minute!)
    }

    func dateTimeSeconds(_ date: Date) -> String {
        let c = parts(date)
        return vi ? String(format: "%02d/%02d/%04d %02d:%02d:%02d", c.day!, c.month!, c.year!, c.hour!, c.minute!, c.second!)
                  : String(format: "%04d-%02d-%02d %02d:%02d:%02d", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    }

    /// A local time for spreadsheets: 2026-11-29 13:48:04 in either language.
    func sortable(_ date: Date?) -> String {
        guard let date else { return "" }
        let c = parts(date)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    }

    /// Day and month of a YYYY-MM-DD key: 29/11 or 11-29.
    func shortDay(_ key: String) -> String {
        let p = key.split(separator: "-")
        guard p.count == 3 else { return key }
        return vi ? "\(p[2])/\(p[1])" : "\(p[1])-\(p[2])"
    }

    func decimal(_ value: Double, digits: Int) -> String {
        let text = String(format: "%.\(digits)f", value)
        return vi ? text.replacingOccurrences(of: ".", with: ",") : text
    }

    func count(_ n: Int) -> String {
        let digits = String(abs(n))
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(vi ? "." : ",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// 93,3% or 93.3%; a dash when there is nothing to divide.
    func percent(_ ratio: Double?) -> String {
        guard let ratio else { return "—" }
        return decimal(ratio * 100, digits: 1) + "%"
    }

    /// 3 ngày 4 giờ, 5 giờ 12 phút, 12 phút 5 giây, 1,25 giây (or d, h, min, s).
    func duration(_ seconds: Double?) -> String {
        guard let seconds else { return "—" }
        let units: [(Double, String, String)] = [(86400, "ngày", "d"), (3600, "giờ", "h"), (60, "phút", "min"), (1, "giây", "s")]
        func unit(_ i: Int) -> String { vi ? units[i].1 : units[i].2 }
        if seconds < 60 {
            let digits = seconds < 1 ? 3 : seconds < 10 ? 2 : 0
            return decimal(seconds, digits: digits) + " " + unit(3)
        }
        let total = Int(seconds.rounded())
        for i in 0..<3 where Double(total) >= units[i].0 {
            let big = total / Int(units[i].0)
            let small = (total % Int(units[i].0)) / Int(units[i + 1].0)
            return small == 0 ? "\(big) \(unit(i))" : "\(big) \(unit(i)) \(small) \(unit(i + 1))"
        }
        return "\(total) \(unit(3))"
    }

    func yesNo(_ value: Bool?) -> String {
        guard let value else { return "—" }
        return value ? t(L.yes) : t(L.no)
    }

    func verdict(_ v: Verdict) -> String { t(L.verdicts[v]!) }
    func status(_ s: ControlStatus) -> String { t(L.controlStatuses[s]!) }

    /// Met / not met / no evidence for an optional judgement.
    func met(_ value: Bool?) -> Verdict { value.map { $0 ? .pass : .fail } ?? .noEvidence }

    func outcome(_ o: RunOutcome) -> String { L.outcomes[o].map(t) ?? o.rawValue }
    func sourceKind(_ k: SourceKind) -> String { L.sourceKinds[k].map(t) ?? k.rawValue }

    func metricLabel(_ m: Metric) -> String { L.metrics[m.id].map(t) ?? m.id }

    func metricValue(_ m: Metric) -> String {
        guard let value = m.value else { return "—" }
        switch m.unit {
        case "seconds": return duration(value)
        case "flag": return yesNo(value >= 1)
        default:
            let n = count(Int(value))
            return m.of.map { "\(n) / \(count(Int($0)))" } ?? n
        }
    }

    func metricThreshold(_ m: Metric) -> String {
        guard let threshold = m.threshold else { return "—" }
        switch m.unit {
        case "seconds": return "≤ " + duration(threshold)
        case "flag": return t(L.yes)
        default: return threshold == 0 ? "= 0" : "≥ " + count(Int(threshold))
        }
    }

    func factLabel(_ f: Fact) -> String {
        var label = L.facts[f.id].map(t) ?? f.id
        if let threshold = f.threshold {
            let shown = f.id == "levelSuccessRate" ? percent(threshold) : duration(threshold)
            label = label.replacingOccurrences(of: "{t}", with: shown)
        }
        return label
    }

    func controlTitle(_ c: Control) -> String {
        if c.id.hasPrefix("level-") { return t(L.levelControl).replacingOccurrences(of: "{n}", with: c.clause) }
        return L.controlTitles[c.id].map(t) ?? c.id
    }

    func controlFramework(_ c: Control) -> String {
        c.id.hasPrefix("level-") ? t(L.levelFramework) + " " + c.clause : c.framework + " " + c.clause
    }

    func periodText(_ p: Period) -> String {
        "\(t(L.from)) \(dateTimeSeconds(p.from)) \(t(L.to)) \(dateTimeSeconds(p.to)) (\(t(L.timeZone)) \(p.timeZone))"
    }

    func scopeText(_ p: Period) -> String {
        p.policy.map { "\(t(L.scopePolicy)) \($0)" } ?? t(L.scopeAll)
    }

    func ledgerStatus(_ l: LedgerSection) -> String {
        switch l.status {
        case "intact": return t(L.ledgerIntact)
        case "broken": return "\(t(L.ledgerBroken)) \(l.brokenAtLine ?? 0)"
        default: return t(L.ledgerAbsent)
        }
    }

    func ledgerVerdict(_ l: LedgerSection) -> Verdict {
        switch l.status {
        case "intact": return .pass
        case "broken": return .fail
        default: return .noEvidence
        }
    }

    func recoveryPoint(_ p: RecoveryPoint?) -> String {
        guard let p else { return t(L.never) }
        return "\(dateTime(p.time)) (\(t(L.snapshot).lowercased()) \(p.snapshot.prefix(8)))"
    }

    func drillSummary(_ d: DrillRecord?) -> String {
        guard let d else { return t(L.never) }
        return "\(dateTime(d.started)): \(verdict(d.passed ? .pass : .fail))"
    }

    /// 1,2 MB or 1.2 MB (powers of 1000).
    func bytes(_ n: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(n)
        var i = 0
        while value >= 1000 && i < units.count - 1 { value /= 1000; i += 1 }
        return i == 0 ? "\(count(Int(n))) B" : decimal(value, digits: 1) + " " + units[i]
    }

    func copyStatus(_ status: String) -> String { L.copyStatuses[status].map(t) ?? status }

    /// The badge colour of a copy status: current passes; behind and never copied fail; not
    /// configured is grey (whether it is required depends on the security level).
    func copyVerdict(_ status: String) -> Verdict {
        switch status {
        case "current": return .pass
        case "notConfigured": return .notApplicable
        default: return .fail
        }
    }

    func copyLag(_ item: CopyItem) -> String {
        guard let lag = item.lagSeconds else { return t(L.neverCopied) }
        return lag == 0 ? t(L.noLag) : duration(lag)
    }

    /// "4 / 3 (3 caught up from earlier runs)".
    func copyRuns(_ item: CopyItem) -> String {
        "\(count(item.succeeded)) / \(count(item.failed))" + (item.caughtUp > 0 ? " (\(count(item.caughtUp)) \(t(L.caughtUp)))" : "")
    }

    func failedChecks(_ checks: [FailedCheck]) -> String {
        checks.isEmpty ? t(L.none) : checks.map { "\($0.name) (\($0.count) \(t(L.times)))" }.joined(separator: "; ")
    }
}

/// What every renderer (HTML, Markdown, CSV) starts from: the document, and a formatter in the
/// report's language and time zone.
protocol ReportRenderer {
    var document: ReportDocument { get }
    var f: Formatter { get }
    init(document: ReportDocument, f: Formatter)
}

extension ReportRenderer {
    init(document: ReportDocument) {
        self.init(document: document, f: Formatter(language: document.meta.language, timeZone: document.data.period.timeZone))
    }

    var data: ReportData { document.data }
    var meta: ReportMeta { document.meta }
}
