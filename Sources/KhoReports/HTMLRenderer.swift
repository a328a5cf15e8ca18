import Foundation

/// One self-contained HTML page: inline CSS, inline SVG charts, no script, A4 print layout.
struct HTMLRenderer: ReportRenderer {
    let document: ReportDocument
    let f: Formatter

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    static func unescape(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    func e(_ text: String) -> String { HTMLRenderer.escape(text) }
    func t(_ text: Text) -> String { e(f.t(text)) }

    func badge(_ v: Verdict) -> String { "<span class=\"badge \(v.rawValue)\">\(e(f.verdict(v)))</span>" }
    func badge(_ s: ControlStatus) -> String { "<span class=\"badge \(s.rawValue)\">\(e(f.status(s)))</span>" }

    func render() -> String {
        var h = ""
        h += "<!DOCTYPE html>\n<html lang=\"\(meta.language.rawValue)\">\n<head>\n<meta charset=\"utf-8\">\n"
        h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        h += "<meta name=\"generator\" content=\"kho \(e(meta.khoVersion))\">\n"
        h += "<meta name=\"kho-report\" content=\"\(e(document.metaLine()))\">\n"
        h += "<title>\(t(L.title)) — \(e(f.dateTime(data.period.from))) – \(e(f.dateTime(data.period.to)))</title>\n"
        h += "<style>\n\(HTMLRenderer.css)</style>\n</head>\n<body>\n"
        h += header()
        h += summary()
        h += charts()
        for agency in data.agencies { h += agencySection(agency) }
        h += walSection()
        h += binlogSection()
        h += ledger()
        h += controls()
        h += levels()
        h += method()
        h += footer()
        h += "</body>\n</html>\n"
        return h
    }

    func header() -> String {
        """
        <header>
        <h1>\(t(L.title))</h1>
        <p class="motto">\(t(L.motto))</p>
        <table class="meta">
        <tr><th>\(t(L.period))</th><td>\(e(f.periodText(data.period)))</td></tr>
        <tr><th>\(t(L.scope))</th><td>\(e(f.scopeText(data.period)))</td></tr>
        <tr><th>\(t(L.generatedAt))</th><td>\(e(f.dateTimeSeconds(meta.generatedAt)))</td></tr>
        <tr><th>\(t(L.khoVersion))</th><td>\(e(meta.khoVersion))</td></tr>
        <tr><th>\(t(L.host))</th><td>\(e(meta.host))</td></tr>
        <tr><th>\(t(L.dataHash))</th><td class="mono">\(e(meta.dataSHA256))</td></tr>
        </table>
        </header>

        """
    }

    func kpi(_ label: String, _ value: String, _ note: String = "", _ verdict: Verdict? = nil) -> String {
        let cls = verdict.map { " k-\($0.rawValue)" } ?? ""
        return "<div class=\"kpi\(cls)\"><div class=\"k-value\">\(e(value))</div><div class=\"k-label\">\(e(label))</div>"
            + (note.isEmpty ? "" : "<div class=\"k-note\">\(e(note))</div>") + "</div>\n"
    }

    func summary() -> String {
        let p = data.province
        var h = "<section id=\"summary\">\n<h2>\(t(L.provinceSummary))</h2>\n<div class=\"kpis\">\n"
        h += kpi(f.t(L.datasets), f.count(p.datasets), "\(f.t(L.agencies)): \(f.count(p.agencies))")
        h += kpi(f.t(L.datasetsPassing), f.count(p.datasetsPassing), "", p.datasetsPassing == p.datasets && p.datasets > 0 ? .pass : nil)
        h += kpi(f.t(L.datasetsFailing), f.count(p.datasetsFailing), "", p.datasetsFailing > 0 ? .fail : nil)
        h += kpi(f.t(L.datasetsNoEvidence), f.count(p.datasetsNoEvidence), "", p.datasetsNoEvidence > 0 ? .noEvidence : nil)
        h += kpi(f.t(L.successRate), f.percent(p.successRate),
                 "\(f.count(p.succeeded)) / \(f.count(p.attempted + p.missed))")
        h += kpi(f.t(L.drillsDone), f.count(p.drills), "\(f.t(L.drillsPassed)): \(f.count(p.drillsPassed))")
        h += kpi(f.t(L.rpoMet), "\(f.count(p.rpoMet)) / \(f.count(p.datasets))")
        h += kpi(f.t(L.rtoMet), "\(f.count(p.rtoMet)) / \(f.count(p.datasets))")
        h += "</div>\n<table class=\"totals\">\n<thead><tr><th>\(t(L.planned))</th><th>\(t(L.attempted))</th><th>\(t(L.succeeded))</th><th>\(t(L.failed))</th><th>\(t(L.partial))</th><th>\(t(L.missed))</th><th>\(t(L.unfinished))</th>"
        for (key, _) in dimensionKeys { h += "<th>\(t(L.dimensionNames[key]!))</th>" }
        h += "</tr></thead>\n<tbody><tr><td>\(f.count(p.planned))</td><td>\(f.count(p.attempted))</td><td>\(f.count(p.succeeded))</td><td>\(f.count(p.failed))</td><td>\(f.count(p.partial))</td><td>\(f.count(p.missed))</td><td>\(f.count(p.unfinished))</td>"
        for (_, count) in dimensionKeys { h += "<td>\(f.count(count(p.dimensionsPassing))) / \(f.count(p.datasets))</td>" }
        h += "</tr></tbody>\n</table>\n"
        h += copiesSummary()
        h += "<p class=\"dims\">"
        h += dimensionKeys.map { "<b>\(t(L.dimensionNames[$0.0]!))</b>: \(t(L.dimensionMeanings[$0.0]!))" }.joined(separator: " · ")
        h += "</p>\n</section>\n"
        return h
    }

    func copyBadge(_ status: String) -> String {
        "<span class=\"badge \(f.copyVerdict(status).rawValue)\">\(e(f.copyStatus(status)))</span>"
    }

    func copiesSummary() -> String {
        let c = data.copies
        var h = "<table class=\"totals copies-summary\">\n<caption>\(t(L.copies)) \(copyBadge(c.status))</caption>\n"
        h += "<thead><tr><th>\(t(L.datasetsWithCopies))</th><th>\(t(L.copiesCurrent))</th><th>\(t(L.copiesBehind))</th><th>\(t(L.copyDestinations))</th><th>\(t(L.copyRunsSucceeded))</th><th>\(t(L.copyRunsFailed))</th></tr></thead>\n"
        h += "<tbody><tr><td>\(f.count(c.configured)) / \(f.count(data.province.datasets))</td><td>\(f.count(c.current)) / \(f.count(c.configured))</td>"
        h += "<td>\(f.count(c.behind))</td><td>\(f.count(c.destinations))</td><td>\(f.count(c.succeeded))</td><td>\(f.count(c.failed))</td></tr></tbody>\n</table>\n"
        return h
    }

    func datasetCopies(_ d: Dataset) -> String {
        let c = d.copies
        var h = "<table class=\"copies\">\n<caption>\(t(L.copies)) \(copyBadge(c.status))"
        if let allowed = c.allowedLagSeconds { h += " <span class=\"note\">\(t(L.allowedLag)) ≤ \(e(f.duration(allowed)))</span>" }
        h += "</caption>\n"
        guard !c.items.isEmpty else {
            return h + "<tbody><tr><td>\(t(L.copiesNotConfigured))</td></tr></tbody>\n</table>\n"
        }
        h += "<thead><tr><th>\(t(L.destination))</th><th>\(t(L.copyRuns))</th><th>\(t(L.newestCopied))</th><th>\(t(L.copyLag))</th><th>\(t(L.result))</th></tr></thead>\n<tbody>\n"
        for item in c.items {
            let added = item.bytesAdded > 0 ? "<div class=\"note\">\(t(L.bytesAdded)): \(e(f.bytes(item.bytesAdded)))</div>" : ""
            h += "<tr><td class=\"mono\">\(e(item.destination))</td><td>\(e(f.copyRuns(item)))\(added)</td>"
            h += "<td>\(e(f.recoveryPoint(item.newestCopied)))</td><td>\(e(f.copyLag(item)))</td><td>\(copyBadge(item.status))</td></tr>\n"
        }
        h += "</tbody>\n</table>\n"
        let failures = c.items.flatMap { item in item.failures.map { (item.destination, $0) } }.sorted { $0.1.started < $1.1.started }
        if !failures.isEmpty {
            h += "<table class=\"failures\">\n<caption>\(t(L.copyFailures))</caption>\n<thead><tr><th>\(t(L.started))</th><th>\(t(L.destination))</th><th>\(t(L.error))</th></tr></thead>\n<tbody>\n"
            for (destination, failure) in failures {
                h += "<tr><td>\(e(f.dateTime(failure.started)))</td><td class=\"mono\">\(e(destination))</td><td>\(e(failure.error))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        return h
    }

    var dimensionKeys: [(String, (DimensionCounts) -> Int)] {
        [("correct", { $0.correct }), ("complete", { $0.complete }), ("clean", { $0.clean }), ("live", { $0.live })]
    }

    func charts() -> String {
        var h = "<section id=\"charts\">\n"
        h += "<figure>\n<figcaption>\(t(L.chartRuns))</figcaption>\n\(Charts(f: f).runsPerDay(data.daily))</figure>\n"
        h += "<figure>\n<figcaption>\(t(L.chartFreshness))</figcaption>\n\(Charts(f: f).freshness(data.datasets))</figure>\n"
        h += "<figure>\n<figcaption>\(t(L.chartRestore))</figcaption>\n\(Charts(f: f).restore(data.datasets))</figure>\n"
        h += "</section>\n"
        return h
    }

    func agencySection(_ agency: Agency) -> String {
        let tt = agency.totals
        var h = "<section class=\"agency\">\n<h2>\(t(L.agency)): \(e(agency.name))</h2>\n"
        h += "<p class=\"line\">\(t(L.datasets)): \(f.count(tt.datasets)) · \(t(L.successRate)): \(e(f.percent(tt.successRate))) · \(t(L.drillsDone)): \(f.count(tt.drills)) · \(t(L.datasetsPassing)): \(f.count(tt.datasetsPassing)) / \(f.count(tt.datasets))</p>\n"
        h += "<table class=\"overview\">\n<colgroup><col style=\"width:14%\"><col style=\"width:6%\"><col style=\"width:9%\"><col style=\"width:6.5%\"><col style=\"width:9%\"><col style=\"width:5%\"><col style=\"width:9%\">"
        h += String(repeating: "<col style=\"width:8.3%\">", count: 5) + "</colgroup>\n<thead><tr><th>\(t(L.dataset))</th><th>\(t(L.planned)) / \(t(L.attempted))</th><th>\(t(L.succeeded)) / \(t(L.failed)) / \(t(L.partial)) / \(t(L.missed))</th><th>\(t(L.successRate))</th><th>\(t(L.worstRpo))</th><th>\(t(L.drillsDone))</th><th>\(t(L.lastRestoreTime))</th>"
        for (key, _) in dimensionKeys { h += "<th>\(t(L.dimensionNames[key]!))</th>" }
        h += "<th>\(t(L.overall))</th></tr></thead>\n<tbody>\n"
        for d in agency.datasets {
            let b = d.backups
            h += "<tr><td><a href=\"#\(anchor(d))\">\(e(d.key))</a></td><td>\(f.count(b.planned)) / \(f.count(b.attempted))</td>"
            h += "<td>\(f.count(b.succeeded)) / \(f.count(b.failed)) / \(f.count(b.partial)) / \(f.count(b.missed))</td>"
            h += "<td>\(e(f.percent(b.successRate)))</td>"
            h += "<td>\(e(f.duration(b.worstRpoSeconds))) \(badge(f.met(b.rpoMet)))</td>"
            h += "<td>\(f.count(d.drills.done))</td>"
            h += "<td>\(e(f.duration(d.drills.lastRtoSeconds))) \(badge(f.met(d.drills.rtoMet)))</td>"
            for (_, dimension) in d.dimensions.all { h += "<td>\(badge(dimension.verdict))</td>" }
            h += "<td>\(badge(d.overall))</td></tr>\n"
        }
        h += "</tbody>\n</table>\n"
        for d in agency.datasets { h += datasetArticle(d) }
        h += "</section>\n"
        return h
    }

    func anchor(_ d: Dataset) -> String {
        "ds-" + d.key.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII ? String($0) : "-" }.joined()
    }

    func row(_ label: Text, _ value: String) -> String { "<tr><th>\(t(label))</th><td>\(value)</td></tr>\n" }

    func datasetArticle(_ d: Dataset) -> String {
        let b = d.backups
        let dr = d.drills
        var h = "<article class=\"dataset\" id=\"\(anchor(d))\">\n"
        h += "<h3>\(e(d.key)) \(badge(d.overall))</h3>\n"
        h += "<p class=\"line\">\(t(L.system)): \(e(d.system)) · \(t(L.sourceKind)): \(e(f.sourceKind(d.sourceKind))) · \(t(L.securityLevel)) \(d.securityLevel) · \(t(L.schedule)): <code>\(e(d.schedule))</code></p>\n"
        h += "<div class=\"cols\">\n<table class=\"facts\">\n<caption>\(t(L.backups))</caption>\n"
        h += row(L.planned, f.count(b.planned))
        h += row(L.attempted, f.count(b.attempted))
        h += row(L.succeeded, f.count(b.succeeded))
        h += row(L.failed, f.count(b.failed))
        h += row(L.partial, f.count(b.partial))
        h += row(L.missed, f.count(b.missed))
        if b.unfinished > 0 { h += row(L.unfinished, f.count(b.unfinished)) }
        h += row(L.successRate, e(f.percent(b.successRate)))
        h += row(L.lastGood, e(f.recoveryPoint(b.lastGood)))
        h += row(L.lastVerified, e(f.recoveryPoint(b.lastVerified)))
        h += row(L.worstRpo, "\(e(f.duration(b.worstRpoSeconds))) \(badge(f.met(b.rpoMet)))")
        h += row(L.rpoObjective, e(f.duration(d.objectives.rpoSeconds)))
        h += "</table>\n<table class=\"facts\">\n<caption>\(t(L.drills))</caption>\n"
        h += row(L.drillsDone, f.count(dr.done))
        h += row(L.drillsPassed, f.count(dr.passed))
        h += row(L.drillsFailed, f.count(dr.failed))
        h += row(L.lastDrill, e(f.drillSummary(dr.last)))
        if dr.lastPITR != nil { h += row(L.lastPITRDrill, e(f.pitrSummary(dr.lastPITR))) }
        h += row(L.lastRestoreTime, "\(e(f.duration(dr.lastRtoSeconds))) \(badge(f.met(dr.rtoMet)))")
        h += row(L.worstRestoreTime, e(f.duration(dr.worstRtoSeconds)))
        h += row(L.rtoObjective, e(f.duration(d.objectives.rtoSeconds)))
        let period = d.objectives.drillEverySeconds.map { f.duration($0) } ?? f.duration(d.objectives.drillPeriodUsedSeconds) + " (" + f.t(L.drillPeriodDefault) + ")"
        h += row(L.drillPeriod, e(period))
        h += row(L.failedChecks, e(f.failedChecks(dr.failedChecks)))
        h += "</table>\n</div>\n"
        h += datasetCopies(d)

        h += "<table class=\"dimensions\">\n<caption>\(t(L.dimensions))</caption>\n<thead><tr><th></th><th>\(t(L.metric))</th><th>\(t(L.value))</th><th>\(t(L.threshold))</th><th>\(t(L.result))</th></tr></thead>\n<tbody>\n"
        for (key, dimension) in d.dimensions.all {
            for (i, m) in dimension.metrics.enumerated() {
                h += "<tr>"
                if i == 0 {
                    h += "<th rowspan=\"\(dimension.metrics.count)\" class=\"dim\">\(t(L.dimensionNames[key]!))<br>\(badge(dimension.verdict))</th>"
                }
                h += "<td>\(e(f.metricLabel(m)))</td><td>\(e(f.metricValue(m)))</td><td>\(e(f.metricThreshold(m)))</td><td>\(badge(m.verdict))</td></tr>\n"
            }
        }
        h += "</tbody>\n</table>\n"

        if !dr.records.isEmpty {
            h += "<table class=\"drills\">\n<caption>\(t(L.drillsInPeriod))</caption>\n<thead><tr><th>\(t(L.started))</th><th>\(t(L.snapshot))</th><th>\(t(L.restoreTime))</th><th>\(t(L.result))</th><th>\(t(L.evidence))</th></tr></thead>\n<tbody>\n"
            for r in dr.records {
                let reasons = r.failureReasons.isEmpty ? "" : "<div class=\"reason\">\(e(r.failureReasons.joined(separator: "; ")))</div>"
                let seal = r.sealIntact ? f.t(L.sealIntact) : f.t(L.sealBroken)
                h += "<tr><td>\(e(f.dateTime(r.started)))</td><td class=\"mono\">\(e(String(r.snapshot.prefix(8))))</td>"
                h += "<td>\(e(f.duration(r.rtoSeconds))) / \(e(f.duration(r.rtoObjectiveSeconds)))</td>"
                h += "<td>\(badge(r.passed ? .pass : .fail))\(reasons)</td>"
                h += "<td><span class=\"mono\">\(e(String(r.evidenceSHA256.prefix(16))))</span> (\(e(seal)))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        if !b.failures.isEmpty {
            h += "<table class=\"failures\">\n<caption>\(t(L.backupFailures))</caption>\n<thead><tr><th>\(t(L.started))</th><th>\(t(L.result))</th><th>\(t(L.error))</th></tr></thead>\n<tbody>\n"
            for failure in b.failures {
                h += "<tr><td>\(e(f.dateTime(failure.started)))</td><td>\(e(f.outcome(failure.outcome)))</td><td>\(e(failure.error))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        h += "</article>\n"
        return h
    }

    func ledger() -> String {
        let l = data.ledger
        var h = "<section id=\"ledger\">\n<h2>\(t(L.ledger))</h2>\n"
        h += "<p>\(badge(f.ledgerVerdict(l))) \(e(f.ledgerStatus(l))) · \(t(L.ledgerEntries)): \(f.count(l.entries))</p>\n"
        if let reason = l.reason { h += "<p class=\"reason\">\(e(reason))</p>\n" }
        h += "<h3>\(t(L.privilegedActions)) (\(f.count(l.actions.count)))</h3>\n"
        if l.actions.isEmpty {
            h += "<p>\(t(L.none))</p>\n"
        } else {
            h += "<table class=\"actions\">\n<thead><tr><th>\(t(L.sequence))</th><th>\(t(L.time))</th><th>\(t(L.user))</th><th>\(t(L.command))</th><th>\(t(L.arguments))</th><th>\(t(L.outcome))</th></tr></thead>\n<tbody>\n"
            for a in l.actions {
                h += "<tr><td>\(a.sequence)</td><td>\(e(f.dateTime(a.time)))</td><td>\(e(a.user))@\(e(a.host))</td><td>\(e(a.command))</td><td class=\"args\">\(e(a.arguments.joined(separator: " ")))</td><td>\(e(a.outcome))</td></tr>\n"
            }
            h += "</tbody>\n</table>\n"
        }
        h += "</section>\n"
        return h
    }

    func walSection() -> String {
        guard let clusters = data.wal, !clusters.isEmpty else { return "" }
        var h = "<section id=\"wal\">\n<h2>\(t(L.walSection))</h2>\n<p class=\"note\">\(t(L.walNote))</p>\n"
        h += "<table class=\"wal\">\n<thead><tr>" + [L.dataset, L.walCluster, L.walNewest, L.walAchievedRpo, L.walWorstRpo, L.walSegments, L.walWindow, L.walGaps]
            .map { "<th>\(t($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
        for w in clusters {
            let newest = (w.newestSegment ?? "—") + (w.newestStored.map { " (\(f.dateTime($0)))" } ?? "")
            let window = w.windowStart.map { "\(f.dateTime($0)) – \(f.dateTime(w.windowEnd))" } ?? t(L.walNoWindow)
            let cells = [w.policy + "/" + w.source, w.cluster, newest, f.duration(w.achievedRpoSeconds), f.duration(w.worstRpoSeconds),
                         f.count(w.segmentsInPeriod), window, w.gaps.isEmpty ? t(L.none) : w.gaps.joined(separator: ", ")]
            h += "<tr>" + cells.map { "<td>\(e($0))</td>" }.joined() + "</tr>\n"
        }
        // PITR drills (design section 8) add their rows here: latest drill, target, exactness.
        h += "</tbody>\n</table>\n</section>\n"
        return h
    }

    func binlogSection() -> String {
        guard let sources = data.binlog, !sources.isEmpty else { return "" }
        var h = "<section id=\"binlog\">\n<h2>\(t(L.binlogSection))</h2>\n<p class=\"note\">\(t(L.binlogNote))</p>\n"
        h += "<table class=\"wal\">\n<thead><tr>" + [L.dataset, L.binlogServer, L.binlogNewest, L.walAchievedRpo, L.binlogTarget, L.walWorstRpo, L.binlogPieces, L.walGaps]
            .map { "<th>\(t($0))</th>" }.joined() + "</tr></thead>\n<tbody>\n"
        for b in sources {
            let newest = (b.newestFile ?? "—") + (b.newestStored.map { " (\(f.dateTime($0)))" } ?? "")
            let cells = [b.policy + "/" + b.source, String(b.serverId), newest, "\(f.duration(b.achievedRpoSeconds)) (\(f.verdict(f.met(b.rpoMet))))",
                         f.duration(b.rpoSeconds), f.duration(b.worstRpoSeconds), f.count(b.piecesInPeriod),
                         b.gaps.isEmpty ? t(L.none) : b.gaps.joined(separator: "; ")]
            h += "<tr>" + cells.map { "<td>\(e($0))</td>" }.joined() + "</tr>\n"
        }
        h += "</tbody>\n</table>\n</section>\n"
        return h
    }

    func controls() -> String {
        var h = "<section id=\"controls\">\n<h2>\(t(L.controls))</h2>\n"
        h += "<table class=\"controls\">\n<thead><tr><th>\(t(L.control))</th><th>\(t(L.status))</th><th>\(t(L.basis))</th></tr></thead>\n<tbody>\n"
        for c in data.controls {
            h += "<tr><td><b>\(e(f.controlFramework(c)))</b><br>\(e(f.controlTitle(c)))</td><td>\(badge(c.status))</td><td><ul>"
            for fact in c.facts {
                let failing = fact.failing.isEmpty ? "" : " <span class=\"failing\">(\(t(L.failing)): \(e(fact.failing.joined(separator: ", "))))</span>"
                h += "<li>\(e(f.factLabel(fact))): <b>\(f.count(fact.met)) / \(f.count(fact.of))</b>\(failing)</li>"
            }
            h += "</ul></td></tr>\n"
        }
        h += "</tbody>\n</table>\n</section>\n"
        return h
    }

    func levels() -> String {
        var h = "<section id=\"levels\">\n<h2>\(t(L.levels))</h2>\n<p class=\"note\">\(t(L.levelsNote))</p>\n"
        h += "<table class=\"levels\">\n<thead><tr><th>\(t(L.level))</th><th>\(t(L.maxRpo))</th><th>\(t(L.drillAtLeast))</th><th>\(t(L.minSuccessRate))</th><th>\(t(L.offsiteCopy))</th><th>\(t(L.auditLedger))</th></tr></thead>\n<tbody>\n"
        for r in data.securityLevels {
            h += "<tr><td>\(r.level)</td><td>\(e(f.duration(r.maxRpoSeconds)))</td><td>\(e(f.duration(r.drillEverySeconds)))</td><td>\(e(f.percent(r.minSuccessRate)))</td>"
            h += "<td>\(t(r.offsiteCopy ? L.required : L.notRequired))</td><td>\(t(r.auditLedger ? L.required : L.notRequired))</td></tr>\n"
        }
        h += "</tbody>\n</table>\n</section>\n"
        return h
    }

    func method() -> String {
        var h = "<section id=\"method\">\n<h2>\(t(L.method))</h2>\n<ul>\n"
        for item in L.methodItems { h += "<li>\(t(item))</li>\n" }
        h += "</ul>\n</section>\n"
        return h
    }

    func footer() -> String {
        """
        <footer>
        <p>\(t(L.title)) · \(t(L.period)) \(e(f.periodText(data.period))) · \(t(L.generatedAt)) \(e(f.dateTimeSeconds(meta.generatedAt))) · kho \(e(meta.khoVersion)) · \(e(meta.host))</p>
        <p>\(t(L.dataHash)): <span class="mono">\(e(meta.dataSHA256))</span></p>
        <p>\(t(L.checkHint))</p>
        </footer>

        """
    }

    static let css = """
    @page { size: A4; margin: 12mm 11mm 14mm 11mm; }
    :root { --ok: #1b7a3a; --bad: #b3261e; --warn: #a15c00; --grey: #6b7178; --line: #cfd4da; --soft: #f3f5f7; }
    * { box-sizing: border-box; }
    html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
    body { font-family: "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt; line-height: 1.4;
           color: #1d2125; background: #fff; max-width: 188mm; margin: 0 auto; padding: 8mm 0; }
    h1 { font-size: 17pt; margin: 0 0 1mm; color: #0b3d62; }
    h2 { font-size: 13pt; margin: 7mm 0 2mm; padding-bottom: 1mm; border-bottom: 2px solid #0b3d62; color: #0b3d62; break-after: avoid; }
    h3 { font-size: 11pt; margin: 5mm 0 1.5mm; break-after: avoid; }
    .motto { margin: 0 0 3mm; font-style: italic; color: var(--grey); }
    table { border-collapse: collapse; width: 100%; margin: 1.5mm 0 3mm; font-size: 8.6pt; }
    th, td { border: 1px solid var(--line); padding: 2px 5px; text-align: left; vertical-align: top; }
    thead th { background: var(--soft); }
    thead { display: table-header-group; }
    tr { break-inside: avoid; }
    caption { text-align: left; font-weight: 600; padding: 1mm 0; }
    table.meta th { width: 42mm; background: var(--soft); }
    .mono, code { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 7.8pt; word-break: break-all; }
    .badge { display: inline-block; padding: 0 5px; border-radius: 3px; color: #fff; font-weight: 600; font-size: 7.8pt; white-space: nowrap; }
    table.overview { table-layout: fixed; }
    table.overview td:first-child { overflow-wrap: anywhere; }
    table.overview { font-size: 8pt; }
    table.overview .badge { white-space: normal; font-size: 7pt; }
    .badge.pass, .badge.met { background: var(--ok); }
    .badge.fail, .badge.notMet { background: var(--bad); }
    .badge.noEvidence { background: var(--bad); outline: 1px dashed #5c0f0b; }
    .badge.partlyMet { background: var(--warn); }
    .badge.notApplicable, .badge.notRecorded { background: var(--grey); }
    .kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 2.5mm; margin: 2mm 0 3mm; }
    .kpi { border: 1px solid var(--line); border-left: 4px solid #0b3d62; padding: 2mm 3mm; break-inside: avoid; }
    .kpi.k-pass { border-left-color: var(--ok); }
    .kpi.k-fail, .kpi.k-noEvidence { border-left-color: var(--bad); }
    .k-value { font-size: 15pt; font-weight: 700; }
    .k-label { font-size: 8.5pt; color: var(--grey); }
    .k-note { font-size: 8pt; }
    .dims { font-size: 8.6pt; color: #333; }
    figure { margin: 2mm 0 4mm; break-inside: avoid; }
    figcaption { font-weight: 600; margin-bottom: 1mm; }
    svg { display: block; width: 100%; height: auto; }
    svg text { font-family: "Noto Sans", "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
    .line { margin: 0 0 1.5mm; color: #333; }
    .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 3mm; }
    table.facts th { width: 55%; font-weight: normal; color: #333; background: var(--soft); }
    table.dimensions th.dim { width: 18mm; text-align: center; vertical-align: middle; background: var(--soft); }
    article.dataset { border-top: 1px solid var(--line); margin-top: 4mm; }
    .reason { color: var(--bad); font-size: 8pt; }
    .failing { color: var(--bad); }
    td.args { word-break: break-all; }
    ul { margin: 0; padding-left: 4.5mm; }
    .note { font-size: 8.6pt; color: var(--grey); }
    footer { margin-top: 8mm; padding-top: 2mm; border-top: 1px solid var(--line); font-size: 8pt; color: var(--grey); }
    footer p { margin: 0.5mm 0; }
    a { color: #0b3d62; }
    @media print {
      body { max-width: none; padding: 0 1px; font-size: 9.5pt; }
      a { color: inherit; text-decoration: none; }
      #ledger, #controls { break-before: page; }
      table.dimensions, .cols, table.levels, table.totals, table.copies, .kpis { break-inside: avoid; }
      article.dataset { break-before: auto; }
    }

    """
}
