import Foundation
import KhoCore
import KhoSupport

/// Markdown for mail: the same sections as the HTML page, as tables.
struct MarkdownRenderer: ReportRenderer {
    let document: ReportDocument
    let f: Formatter

    /// A table cell: no line breaks, pipes escaped.
    func c(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "|", with: "\\|")
            .replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
    }
    func t(_ text: Text) -> String { f.t(text) }

    func table(_ header: [String], _ rows: [[String]]) -> String {
        var s = "| " + header.map(c).joined(separator: " | ") + " |\n"
        s += "|" + header.map { _ in " --- |" }.joined() + "\n"
        for row in rows { s += "| " + row.map(c).joined(separator: " | ") + " |\n" }
        return s + "\n"
    }

    func render() -> String {
        let meta = document.meta
        var s = "<!-- kho-report \(document.metaLine()) -->\n"
        s += "# \(t(L.title))\n\n*\(t(L.motto))*\n\n"
        s += table(["", ""], [
            [t(L.period), f.periodText(data.period)],
            [t(L.scope), f.scopeText(data.period)],
            [t(L.generatedAt), f.dateTimeSeconds(meta.generatedAt)],
            [t(L.khoVersion), meta.khoVersion],
            [t(L.host), meta.host],
            [t(L.dataHash), "`\(meta.dataSHA256)`"],
        ])
        let p = data.province
        s += "## \(t(L.provinceSummary))\n\n"
        s += table([t(L.datasets), t(L.datasetsPassing), t(L.datasetsFailing), t(L.datasetsNoEvidence), t(L.successRate), t(L.drillsDone), t(L.rpoMet), t(L.rtoMet)], [[
            f.count(p.datasets), f.count(p.datasetsPassing), f.count(p.datasetsFailing), f.count(p.datasetsNoEvidence),
            f.percent(p.successRate), f.count(p.drills), "\(f.count(p.rpoMet)) / \(f.count(p.datasets))", "\(f.count(p.rtoMet)) / \(f.count(p.datasets))",
        ]])
        s += table([t(L.planned), t(L.attempted), t(L.succeeded), t(L.failed), t(L.partial), t(L.missed), t(L.unfinished),
                    t(L.dimensionNames["correct"]!), t(L.dimensionNames["complete"]!), t(L.dimensionNames["clean"]!), t(L.dimensionNames["live"]!)], [[
            f.count(p.planned), f.count(p.attempted), f.count(p.succeeded), f.count(p.failed), f.count(p.partial), f.count(p.missed), f.count(p.unfinished),
            "\(p.dimensionsPassing.correct) / \(p.datasets)", "\(p.dimensionsPassing.complete) / \(p.datasets)",
            "\(p.dimensionsPassing.clean) / \(p.datasets)", "\(p.dimensionsPassing.live) / \(p.datasets)",
        ]])
        let copies = data.copies
        s += "**\(t(L.copies))**: \(f.copyStatus(copies.status))\n\n"
        s += table([t(L.datasetsWithCopies), t(L.copiesCurrent), t(L.copiesBehind), t(L.copyDestinations), t(L.copyRunsSucceeded), t(L.copyRunsFailed)], [[
            "\(f.count(copies.configured)) / \(f.count(p.datasets))", "\(f.count(copies.current)) / \(f.count(copies.configured))",
            f.count(copies.behind), f.count(copies.destinations), f.count(copies.succeeded), f.count(copies.failed),
        ]])
        for agency in data.agencies {
            s += "## \(t(L.agency)): \(agency.name)\n\n"
            s += table([t(L.dataset), t(L.planned), t(L.attempted), t(L.succeeded), t(L.failed), t(L.partial), t(L.missed), t(L.successRate),
                        t(L.worstRpo), t(L.drillsDone), t(L.lastRestoreTime), t(L.overall)],
                       agency.datasets.map { d in
                           [d.key, f.count(d.backups.planned), f.count(d.backups.attempted), f.count(d.backups.succeeded), f.count(d.backups.failed),
                            f.count(d.backups.partial), f.count(d.backups.missed), f.percent(d.backups.successRate),
                            "\(f.duration(d.backups.worstRpoSeconds)) (\(f.verdict(f.met(d.backups.rpoMet))))", f.count(d.drills.done),
                            "\(f.duration(d.drills.lastRtoSeconds)) (\(f.verdict(f.met(d.drills.rtoMet))))", f.verdict(d.overall)]
                       })
            for d in agency.datasets { s += dataset(d) }
        }
        s += walSection()
        s += binlogSection()
        s += ledger()
        s += "## \(t(L.controls))\n\n"
        s += table([t(L.control), t(L.status), t(L.basis)], data.controls.map { control in
            [f.controlFramework(control) + " — " + f.controlTitle(control), f.status(control.status),
             control.facts.map { fact in
                 "\(f.factLabel(fact)): \(fact.met) / \(fact.of)" + (fact.failing.isEmpty ? "" : " (\(t(L.failing)): \(fact.failing.joined(separator: ", ")))")
             }.joined(separator: "; ")]
        })
        s += "## \(t(L.levels))\n\n\(t(L.levelsNote))\n\n"
        s += table([t(L.level), t(L.maxRpo), t(L.drillAtLeast), t(L.minSuccessRate), t(L.offsiteCopy), t(L.auditLedger)], data.securityLevels.map { r in
            [String(r.level), f.duration(r.maxRpoSeconds), f.duration(r.drillEverySeconds), f.percent(r.minSuccessRate),
             t(r.offsiteCopy ? L.required : L.notRequired), t(r.auditLedger ? L.required : L.notRequired)]
        })
        s += "## \(t(L.method))\n\n"
        for item in L.methodItems { s += "- \(t(item))\n" }
        s += "\n---\n\n\(t(L.dataHash)): `\(meta.dataSHA256)` · \(t(L.checkHint))\n"
        return s
    }

    func dataset(_ d: Dataset) -> String {
        let b = d.backups, dr = d.drills
        var s = "### \(d.key) — \(f.verdict(d.overall))\n\n"
        s += "\(t(L.system)): \(d.system) · \(t(L.sourceKind)): \(f.sourceKind(d.sourceKind)) · \(t(L.securityLevel)) \(d.securityLevel) · \(t(L.schedule)): `\(d.schedule)`\n\n"
        let period = d.objectives.drillEverySeconds.map { f.duration($0) } ?? f.duration(d.objectives.drillPeriodUsedSeconds) + " (" + t(L.drillPeriodDefault) + ")"
        s += "- \(t(L.backups)): \(t(L.planned)) \(f.count(b.planned)), \(t(L.attempted)) \(f.count(b.attempted)), \(t(L.succeeded)) \(f.count(b.succeeded)), \(t(L.failed)) \(f.count(b.failed)), \(t(L.partial)) \(f.count(b.partial)), \(t(L.missed)) \(f.count(b.missed)), \(t(L.unfinished)) \(f.count(b.unfinished))\n"
        s += "- \(t(L.successRate)): \(f.percent(b.successRate))\n"
        s += "- \(t(L.lastGood)): \(f.recoveryPoint(b.lastGood))\n"
        s += "- \(t(L.lastVerified)): \(f.recoveryPoint(b.lastVerified))\n"
        s += "- \(t(L.worstRpo)): \(f.duration(b.worstRpoSeconds)) — \(t(L.rpoObjective)): \(f.duration(d.objectives.rpoSeconds)) — \(f.verdict(f.met(b.rpoMet)))\n"
        s += "- \(t(L.drills)): \(t(L.drillsDone)) \(f.count(dr.done)), \(t(L.drillsPassed)) \(f.count(dr.passed)), \(t(L.drillsFailed)) \(f.count(dr.failed)); \(t(L.lastDrill)): \(f.drillSummary(dr.last)); \(t(L.drillPeriod)): \(period)\n"
        s += "- \(t(L.lastRestoreTime)): \(f.duration(dr.lastRtoSeconds)); \(t(L.worstRestoreTime)): \(f.duration(dr.worstRtoSeconds)) — \(t(L.rtoObjective)): \(f.duration(d.objectives.rtoSeconds)) — \(f.verdict(f.met(dr.rtoMet)))\n"
        s += "- \(t(L.failedChecks)): \(f.failedChecks(dr.failedChecks))\n"
        if dr.lastPITR != nil { s += "- \(t(L.lastPITRDrill)): \(f.pitrSummary(dr.lastPITR))\n" }
        let copies = d.copies
        var copiesLine = f.copyStatus(copies.status)
        if copies.status == "notConfigured" { copiesLine = t(L.copiesNotConfigured) }
        if let allowed = copies.allowedLagSeconds { copiesLine += " (\(t(L.allowedLag)) ≤ \(f.duration(allowed)))" }
        s += "- \(t(L.copies)): \(copiesLine)\n\n"
        if !copies.items.isEmpty {
            s += table([t(L.destination), t(L.copyRuns), t(L.newestCopied), t(L.copyLag), t(L.result)], copies.items.map { item in
                [item.destination, f.copyRuns(item) + (item.bytesAdded > 0 ? "; \(t(L.bytesAdded)) \(f.bytes(item.bytesAdded))" : ""),
                 f.recoveryPoint(item.newestCopied), f.copyLag(item), f.copyStatus(item.status)]
            })
        }
        var rows: [[String]] = []
        for (key, dimension) in d.dimensions.all {
            for m in dimension.metrics {
                rows.append(["\(t(L.dimensionNames[key]!)) (\(f.verdict(dimension.verdict)))", f.metricLabel(m), f.metricValue(m), f.metricThreshold(m), f.verdict(m.verdict)])
            }
        }
        s += table(["", t(L.metric), t(L.value), t(L.threshold), t(L.result)], rows)
        if !dr.records.isEmpty {
            s += "**\(t(L.drillsInPeriod))**\n\n"
            s += table([t(L.started), t(L.snapshot), t(L.restoreTime), t(L.result), t(L.evidence)], dr.records.map { r in
                [f.dateTime(r.started), String(r.snapshot.prefix(8)), "\(f.duration(r.rtoSeconds)) / \(f.duration(r.rtoObjectiveSeconds))",
                 f.verdict(r.passed ? .pass : .fail) + (r.failureReasons.isEmpty ? "" : ": " + r.failureReasons.joined(separator: "; ")),
                 "`\(r.evidenceSHA256.prefix(16))` (\(r.sealIntact ? t(L.sealIntact) : t(L.sealBroken)))"]
            })
        }
        if !b.failures.isEmpty {
            s += "**\(t(L.backupFailures))**\n\n"
            s += table([t(L.started), t(L.result), t(L.error)], b.failures.map { [f.dateTime($0.started), f.outcome($0.outcome), $0.error] })
        }
        let copyFailures = d.copies.items.flatMap { item in item.failures.map { (item.destination, $0) } }.sorted { $0.1.started < $1.1.started }
        if !copyFailures.isEmpty {
            s += "**\(t(L.copyFailures))**\n\n"
            s += table([t(L.started), t(L.destination), t(L.error)], copyFailures.map { [f.dateTime($0.1.started), $0.0, $0.1.error] })
        }
        return s
    }

    func walSection() -> String {
        guard let clusters = data.wal, !clusters.isEmpty else { return "" }
        var s = "## \(t(L.walSection))\n\n\(t(L.walNote))\n\n"
        s += table([t(L.dataset), t(L.walCluster), t(L.walNewest), t(L.walAchievedRpo), t(L.walWorstRpo), t(L.walSegments), t(L.walWindow), t(L.walGaps)],
                   clusters.map { w in
                       [w.policy + "/" + w.source, w.cluster, (w.newestSegment ?? "—") + (w.newestStored.map { " (\(f.dateTime($0)))" } ?? ""),
                        f.duration(w.achievedRpoSeconds), f.duration(w.worstRpoSeconds), f.count(w.segmentsInPeriod),
                        w.windowStart.map { "\(f.dateTime($0)) – \(f.dateTime(w.windowEnd))" } ?? t(L.walNoWindow),
                        w.gaps.isEmpty ? t(L.none) : w.gaps.joined(separator: ", ")]
                   })
        // PITR drills (design section 8) add their rows here: latest drill, target, exactness.
        return s
    }

    func binlogSection() -> String {
        guard let sources = data.binlog, !sources.isEmpty else { return "" }
        var s = "## \(t(L.binlogSection))\n\n\(t(L.binlogNote))\n\n"
        s += table([t(L.dataset), t(L.binlogServer), t(L.binlogNewest), t(L.walAchievedRpo), t(L.binlogTarget), t(L.walWorstRpo), t(L.binlogPieces), t(L.walGaps)],
                   sources.map { b in
                       [b.policy + "/" + b.source, String(b.serverId), (b.newestFile ?? "—") + (b.newestStored.map { " (\(f.dateTime($0)))" } ?? ""),
                        "\(f.duration(b.achievedRpoSeconds)) (\(f.verdict(f.met(b.rpoMet))))", f.duration(b.rpoSeconds), f.duration(b.worstRpoSeconds),
                        f.count(b.piecesInPeriod), b.gaps.isEmpty ? t(L.none) : b.gaps.joined(separator: "; ")]
                   })
        return s
    }

    func ledger() -> String {
        let l = data.ledger
        var s = "## \(t(L.ledger))\n\n\(f.verdict(f.ledgerVerdict(l))): \(f.ledgerStatus(l)) · \(t(L.ledgerEntries)): \(f.count(l.entries))\n\n"
        if let reason = l.reason { s += "> \(reason)\n\n" }
        s += "### \(t(L.privilegedActions)) (\(l.actions.count))\n\n"
        if l.actions.isEmpty { return s + t(L.none) + "\n\n" }
        s += table([t(L.sequence), t(L.time), t(L.user), t(L.command), t(L.arguments), t(L.outcome)], l.actions.map { a in
            [String(a.sequence), f.dateTime(a.time), "\(a.user)@\(a.host)", a.command, a.arguments.joined(separator: " "), a.outcome]
        })
        return s
    }
}

/// CSV for spreadsheets: one row per dataset, the report's own facts repeated on every row.
/// UTF-8 with a byte order mark (so that spreadsheet programs read the diacritics), CRLF lines.
struct CSVRenderer: ReportRenderer {
    let document: ReportDocument
    let f: Formatter

    static func field(_ text: String) -> String {
        if text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
            return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return text
    }

    static func number(_ value: Double?, digits: Int = 3) -> String {
        guard let value else { return "" }
        var text = String(format: "%.\(digits)f", value)
        while text.contains(".") && (text.hasSuffix("0") || text.hasSuffix(".")) { text.removeLast() }
        return text
    }

    func render() -> String {
        let meta = document.meta
        let columns = L.csvColumns
        var lines = [columns.map { CSVRenderer.field(f.t($0.text)) }.joined(separator: ",")]
        for d in document.data.datasets {
            let b = d.backups, dr = d.drills
            let values: [String: String] = [
                "agency": d.agency, "system": d.system, "policy": d.policy, "source": d.source, "kind": d.sourceKind.rawValue,
                "level": String(d.securityLevel), "planned": String(b.planned), "attempted": String(b.attempted),
                "succeeded": String(b.succeeded), "failed": String(b.failed), "partial": String(b.partial), "missed": String(b.missed),
                "unfinished": String(b.unfinished), "successRate": CSVRenderer.number(b.successRate.map { $0 * 100 }, digits: 2),
                "lastGood": f.sortable(b.lastGood?.time), "lastGoodSnapshot": b.lastGood?.snapshot ?? "",
                "lastVerified": f.sortable(b.lastVerified?.time), "lastVerifiedSnapshot": b.lastVerified?.snapshot ?? "",
                "worstRpo": CSVRenderer.number(b.worstRpoSeconds), "rpo": CSVRenderer.number(d.objectives.rpoSeconds),
                "rpoMet": f.verdict(f.met(b.rpoMet)), "drills": String(dr.done), "drillsPassed": String(dr.passed),
                "lastDrill": f.sortable(dr.last?.started), "lastDrillPassed": dr.last.map { f.yesNo($0.passed) } ?? "",
                "lastRto": CSVRenderer.number(dr.lastRtoSeconds), "worstRto": CSVRenderer.number(dr.worstRtoSeconds),
                "rto": CSVRenderer.number(d.objectives.rtoSeconds), "rtoMet": f.verdict(f.met(dr.rtoMet)),
                "failedChecks": dr.failedChecks.map { "\($0.name) ×\($0.count)" }.joined(separator: "; "),
                "correct": f.verdict(d.dimensions.correct.verdict), "complete": f.verdict(d.dimensions.complete.verdict),
                "clean": f.verdict(d.dimensions.clean.verdict), "live": f.verdict(d.dimensions.live.verdict),
                "overall": f.verdict(d.overall), "copies": f.copyStatus(d.copies.status),
                "copyDestinations": String(d.copies.items.count),
                "copyDestinationsCurrent": String(d.copies.items.filter { $0.status == "current" }.count),
                "copyLagMax": d.copies.items.isEmpty || d.copies.items.contains { $0.lagSeconds == nil }
                    ? "" : CSVRenderer.number(d.copies.items.compactMap(\.lagSeconds).max()),
                "copyRunsSucceeded": String(d.copies.items.reduce(0) { $0 + $1.succeeded }),
                "copyRunsFailed": String(d.copies.items.reduce(0) { $0 + $1.failed }),
                "copyDetails": d.copies.items.map { "\($0.destination): \(f.copyStatus($0.status)), \(f.copyLag($0))" }.joined(separator: "; "),
                "periodFrom": Timestamp.format(meta.periodFrom), "periodTo": Timestamp.format(meta.periodTo),
                "scopePolicy": meta.policy ?? "", "generatedAt": Timestamp.format(meta.generatedAt),
                "khoVersion": meta.khoVersion, "host": meta.host, "dataSHA256": meta.dataSHA256,
            ]
            lines.append(columns.map { CSVRenderer.field(values[$0.key] ?? "") }.joined(separator: ","))
        }
        return "\u{FEFF}" + lines.joined(separator: "\r\n") + "\r\n"
    }

    /// RFC 4180 records.
    static func parse(_ text: String) -> [[String]] {
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var quoted = false
        var i = text.startIndex
        while i < text.endIndex {
            let ch = text[i]
            if quoted {
                if ch == "\"" {
                    let next = text.index(after: i)
                    if next < text.endIndex && text[next] == "\"" { field.append("\""); i = text.index(after: next); continue }
                    quoted = false
                } else {
                    field.append(ch)
                }
            } else if ch == "\"" {
                quoted = true
            } else if ch == "," {
                record.append(field); field = ""
            } else if ch == "\r\n" || ch == "\n" || ch == "\r" {
                record.append(field); field = ""
                records.append(record); record = []
            } else {
                field.append(ch)
            }
            i = text.index(after: i)
        }
        if !field.isEmpty || !record.isEmpty { record.append(field); records.append(record) }
        return records
    }

    /// The metadata of a CSV report, from its header (which says the language) and first row.
    static func readMeta(_ text: String) -> ReportMeta? {
        let records = parse(text)
        guard records.count >= 2, let header = records.first else { return nil }
        for language in ReportLanguage.allCases where header == L.csvColumns.map({ $0.text(language) }) {
            let row = records[1]
            guard row.count == header.count else { return nil }
            func value(_ key: String) -> String { row[L.csvColumns.firstIndex { $0.key == key }!] }
            guard let from = Timestamp.parse(value("periodFrom")), let to = Timestamp.parse(value("periodTo")),
                  let generated = Timestamp.parse(value("generatedAt")) else { return nil }
            return ReportMeta(format: ReportDocument.formatName, schemaVersion: ReportDocument.schemaVersion, generatedAt: generated,
                              khoVersion: value("khoVersion"), host: value("host"), language: language, periodFrom: from, periodTo: to,
                              policy: value("scopePolicy").isEmpty ? nil : value("scopePolicy"), dataSHA256: value("dataSHA256"))
        }
        return nil
    }
}
