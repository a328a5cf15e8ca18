import ArgumentParser
import Foundation
import Glibc
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import KhoReports

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Compliance report per agency and dataset: backups, RPO, drills, RTO, đúng - đủ - sạch - sống, ledger, controls.",
        discussion: """
        Built from the catalog, the policies and the audit ledger only; a dataset without runs in the \
        period is shown as "no evidence", never as a pass. Dates are days in Asia/Ho_Chi_Minh \
        (2026-11-01; --to includes the whole day) or RFC 3339 times. Default: the last 30 days, \
        HTML, Vietnamese. JSON follows docs/report.schema.json.

        Every report states its period and a SHA-256 of its data. `kho report --check FILE` \
        recomputes the data from the catalog for the period and policy the file states and \
        compares (and, for a file made by this kho version, its whole text): exit 0 when equal, \
        12 when not.
        """
    )

    @OptionGroup var orchestration: OrchestrationOptions

    @Option(help: "Start of the period: YYYY-MM-DD or an RFC 3339 time (default: 30 days before --to).") var from: String?
    @Option(help: "End of the period: YYYY-MM-DD (the whole day) or an RFC 3339 time (default: now).") var to: String?
    @Option(help: "Only this policy.") var policy: String?
    @Option(help: "html, json, md or csv.") var format = "html"
    @Option(help: "vi or en.") var lang = "vi"
    @Option(help: "Write the report to this file instead of standard output.") var out: String?
    @Option(help: "Check a report file against the catalog instead of writing one.") var check: String?

    func validate() throws {
        guard ReportFormat(rawValue: format) != nil else {
            throw ValidationError("--format must be html, json, md or csv; got \(format).")
        }
        guard ReportLanguage(rawValue: lang) != nil else {
            throw ValidationError("--lang must be vi or en; got \(lang).")
        }
        if check != nil && (from != nil || to != nil || policy != nil || out != nil) {
            throw ValidationError("--check reads the period and policy from the file: give it alone (with --policies and --state-dir if needed).")
        }
        if let from, Report.parseDate(from, endOfDay: false) == nil {
            throw ValidationError("--from must be a date (2026-11-01) or an RFC 3339 time (2026-11-01T08:00:00+07:00); got \(from).")
        }
        if let to, Report.parseDate(to, endOfDay: true) == nil {
            throw ValidationError("--to must be a date (2026-11-30) or an RFC 3339 time (2026-11-30T17:00:00+07:00); got \(to).")
        }
    }

    /// A day in the report's time zone (its start, or its last second for --to), or an exact time.
    static func parseDate(_ text: String, endOfDay: Bool) -> Date? {
        if let exact = Timestamp.parse(text) { return exact }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = ReportScope.defaultTimeZone
        let parts = text.split(whereSeparator: { $0 == "-" || $0 == "T" || $0 == " " || $0 == ":" }).map { Int($0) }
        guard parts.count == 3 || parts.count == 5, !parts.contains(nil) else { return nil }
        let p = parts.map { $0! }
        guard (1...12).contains(p[1]), (1...31).contains(p[2]) else { return nil }
        var components = DateComponents(year: p[0], month: p[1], day: p[2])
        if p.count == 5 {
            guard (0...23).contains(p[3]), (0...59).contains(p[4]) else { return nil }
            components.hour = p[3]
            components.minute = p[4]
        }
        guard let date = calendar.date(from: components) else { return nil }
        if p.count == 3 && endOfDay { return calendar.date(byAdding: .day, value: 1, to: date)!.addingTimeInterval(-1) }
        return date
    }

    static func wholeSecond(_ date: Date) -> Date {
        Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
    }

    func sources() throws -> (policies: [Policy], catalog: Catalog, ledger: AuditLedger) {
        let state = orchestration.stateDirectory
        guard FileManager.default.fileExists(atPath: state + "/catalog.sqlite") else {
            throw KhoError(.usage, "There is no catalog in \(state): give --state-dir (or KHO_STATE_DIR) where `kho run` keeps it.")
        }
        return (try orchestration.loadPolicies(checkSecrets: false), try orchestration.catalog(), try AuditLedger(stateDirectory: state))
    }

    func run() throws {
        if let check { return try runCheck(check) }
        let (policies, catalog, ledger) = try sources()
        if let policy, !policies.contains(where: { $0.name == policy }) {
            throw KhoError(.usage, "No policy named \(policy): see `kho policy list`.")
        }
        let now = Report.wholeSecond(Clock.now)
        let end = Report.wholeSecond(min(to.flatMap { Report.parseDate($0, endOfDay: true) } ?? now, now))
        let start = Report.wholeSecond(from.flatMap { Report.parseDate($0, endOfDay: false) } ?? end.addingTimeInterval(-30 * 86400))
        guard start < end else {
            throw KhoError(.usage, "The period is empty: --from (\(Timestamp.format(start))) must be before --to (\(Timestamp.format(end)), and --to is never later than now).")
        }
        let scope = ReportScope(from: start, to: end, policy: policy)
        let data = try ReportBuilder.build(policies: policies, catalog: catalog, ledger: ledger, scope: scope,
                                           wal: try WALSection.read(policies: policies, scope: scope),
                                           binlog: try BinlogSection.read(policies: policies, scope: scope))
        let document = try ReportDocument(data: data, generatedAt: now, khoVersion: Kho.version, host: Host.name,
                                          language: ReportLanguage(rawValue: lang)!)
        let bytes = try document.render(ReportFormat(rawValue: format)!)
        guard let out else {
            Terminal.write(STDOUT_FILENO, String(decoding: bytes, as: UTF8.self))
            return
        }
        let temporary = out + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes)) else {
            throw KhoError(.failure, "Cannot write \(out): check that its folder exists and is writable.")
        }
        guard rename(temporary, out) == 0 else {
            let code = errno
            unlink(temporary)
            throw KhoError.posix("rename", out, errno: code)
        }
        Terminal.write(STDERR_FILENO, "report written to \(out): \(data.province.datasets) datasets, \(Timestamp.format(start)) to \(Timestamp.format(end)), data SHA-256 \(document.meta.dataSHA256)\n")
    }

    func runCheck(_ path: String) throws {
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw KhoError(.usage, "The report \(path) cannot be read: check the path and its permissions.")
        }
        let (policies, catalog, ledger) = try sources()
        let result = try ReportDocument.check(Array(contents), khoVersion: Kho.version) { scope in
            // The WAL and binary log sections are read again from the repositories: equal until
            // retention removes files of the period.
            try ReportBuilder.build(policies: policies, catalog: catalog, ledger: ledger, scope: scope,
                                    wal: try WALSection.read(policies: policies, scope: scope),
                                           binlog: try BinlogSection.read(policies: policies, scope: scope))
        }
        let period = "\(Timestamp.format(result.meta.periodFrom)) to \(Timestamp.format(result.meta.periodTo))"
            + (result.meta.policy.map { ", policy \($0)" } ?? "")
        if result.matches {
            let how = result.textCompared ? "its data and its text match" : "its data match (made by kho \(result.meta.khoVersion): the text was not compared)"
            Terminal.out("OK \(path): \(how) the catalog for \(period); data SHA-256 \(result.computedSHA256)")
            return
        }
        if !result.dataMatches {
            Terminal.out("MISMATCH \(path): the report states data SHA-256 \(result.meta.dataSHA256), the catalog gives \(result.computedSHA256) for \(period)")
        } else {
            Terminal.out("MISMATCH \(path): the data hash matches the catalog but the text was changed after the report was made")
        }
        for difference in result.differences { Terminal.out("  \(difference)") }
        try finish(.damaged)
    }
}
