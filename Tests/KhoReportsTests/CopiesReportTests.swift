import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import Testing
@testable import KhoReports

/// Copies at a second site in the report: the simulated month's ho-tich copies to a folder every
/// night and to an S3 bucket that was down on Nov 3-5 and caught up on Nov 6; dat-dai copies to
/// an S3 bucket that is down from Nov 28 (see SimulatedMonth).
@Suite("report copies at a second site")
struct CopiesReportTests {
    let month: SimulatedMonth
    let data: ReportData

    init() throws {
        month = try SimulatedMonth()
        data = try month.report()
    }

    func dataset(_ key: String, in data: ReportData? = nil) throws -> Dataset {
        try #require((data ?? self.data).datasets.first { $0.key == key }, "dataset \(key) is missing from the report")
    }

    func item(_ d: Dataset, _ destination: String) throws -> CopyItem {
        try #require(d.copies.items.first { $0.destination == destination }, "\(d.key) has no copy to \(destination)")
    }

    @Test("per destination: the period's copy runs, catch-ups, the newest copied point and the lag, from the copy runs alone")
    func itemsFromRuns() throws {
        for (key, destinations) in SimulatedMonth.copyDestinations {
            let d = try dataset(key)
            #expect(d.copies.items.map(\.destination) == destinations.map(\.destination), "in the policy's order")
            #expect(d.copies.allowedLagSeconds == d.objectives.rpoSeconds + d.objectives.rpoToleranceSeconds)
            let lastGood = try #require(d.backups.lastGood)
            for item in d.copies.items {
                let runs = month.copies(of: key, to: item.destination)
                #expect(item.succeeded == runs.filter { $0.outcome == "success" }.count, "\(key) \(item.destination)")
                #expect(item.failed == runs.filter { $0.outcome == "failure" }.count, "\(key) \(item.destination)")
                #expect(item.caughtUp == runs.filter(\.caughtUp).count, "\(key) \(item.destination)")
                #expect(item.bytesAdded == runs.reduce(Int64(0)) { $0 + $1.bytesAdded })
                #expect(item.failures.map(\.started) == runs.filter { $0.outcome == "failure" }.map(\.started))
                #expect(item.failures.allSatisfy { $0.outcome == .failure && $0.error.contains("Connection refused") })
                let newest = try #require(month.copies.filter {
                    $0.dataset == key && $0.destination == item.destination && $0.outcome == "success" && $0.ended <= month.scope.to
                }.max { $0.snapshotTime < $1.snapshotTime })
                #expect(item.newestCopied == RecoveryPoint(snapshot: newest.snapshot, time: newest.snapshotTime, confirmedAt: newest.ended, drillID: nil))
                #expect(item.lagSeconds == lastGood.time.timeIntervalSince(newest.snapshotTime))
            }
        }
        for key in SimulatedMonth.datasets where SimulatedMonth.copyDestinations[key] == nil {
            let d = try dataset(key)
            #expect(d.copies == Copies(status: "notConfigured", allowedLagSeconds: nil, items: []), "\(key)")
        }
    }

    @Test("the figures written out by hand: a destination copied every night and one caught up after three nights down are current; one down for the last three nights is behind")
    func byHand() throws {
        let hoTich = try dataset("ho-tich/ho-tich-db")
        let drSite = try item(hoTich, SimulatedMonth.drSite)
        #expect(drSite.status == "current")
        #expect((drSite.succeeded, drSite.failed, drSite.caughtUp) == (28, 0, 0), "28 good nights in November (the 10th and 11th failed)")
        #expect(drSite.lagSeconds == 0)
        #expect(drSite.newestCopied?.time == SimulatedMonth.local(11, 30, 1, 30, 11))
        #expect(drSite.newestCopied?.snapshot == hoTich.backups.lastGood?.snapshot)
        #expect(drSite.failures.isEmpty)
        let s3 = try item(hoTich, SimulatedMonth.hoTichS3)
        #expect(s3.status == "current")
        #expect((s3.succeeded, s3.failed, s3.caughtUp) == (28, 3, 3), "down on the 3rd, 4th and 5th; on the 6th those three and the 6th's")
        #expect(s3.bytesAdded == 28 * 12_000)
        #expect(s3.lagSeconds == 0)
        #expect(s3.failures.map(\.started) == [3, 4, 5].map { SimulatedMonth.local(11, $0, 1, 32, 10) })
        #expect(hoTich.copies.status == "current")
        #expect(hoTich.copies.allowedLagSeconds == 87264, "24 h and its 1% tolerance")

        let datDai = try dataset("dat-dai/dat-dai-db")
        let behind = try item(datDai, SimulatedMonth.datDaiS3)
        #expect(behind.status == "behind")
        #expect((behind.succeeded, behind.failed, behind.caughtUp) == (26, 3, 0), "29 nights with a snapshot (not the 20th), the last three not copied")
        #expect(behind.newestCopied?.time == SimulatedMonth.local(11, 27, 2, 0, 11))
        #expect(behind.lagSeconds == 259200, "three days")
        #expect(datDai.copies.status == "behind")

        #expect(data.copies == CopiesSummary(status: "behind", configured: 2, current: 1, behind: 1, destinations: 3, succeeded: 82, failed: 6))
    }

    @Test("current means within the RPO of the newest good backup: the same destination is current with a day's lag, behind with two")
    func currentWithinRPO() throws {
        func datDai(to day: Int) throws -> (Dataset, ReportData) {
            let scope = ReportScope(from: month.scope.from, to: SimulatedMonth.local(11, day, 23, 59, 59))
            let data = try ReportBuilder.build(policies: month.policies, catalog: month.catalog, ledger: month.ledger, scope: scope)
            return (try dataset("dat-dai/dat-dai-db", in: data), data)
        }
        let (upToDate, _) = try datDai(to: 27)
        #expect(upToDate.copies.items[0].lagSeconds == 0)
        #expect(upToDate.copies.status == "current")
        // The 28th's copy failed: one day behind the newest good backup, within the RPO of 24 h
        // (plus its tolerance). Still current, with the failure shown.
        let (oneDay, oneDayData) = try datDai(to: 28)
        #expect(oneDay.copies.items[0].lagSeconds == 86400)
        #expect(oneDay.copies.items[0].failed == 1)
        #expect(oneDay.copies.status == "current")
        let level3 = try #require(oneDayData.controls.first { $0.id == "level-3" })
        #expect(level3.facts.first { $0.id == "offsiteCopy" }?.met == 2)
        let (twoDays, twoDaysData) = try datDai(to: 29)
        #expect(twoDays.copies.items[0].lagSeconds == 172800, "two days")
        #expect(twoDays.copies.status == "behind")
        #expect(twoDaysData.controls.first { $0.id == "level-3" }?.facts.first { $0.id == "offsiteCopy" }?.failing == ["dat-dai/dat-dai-db"])
    }

    @Test("a destination that never received a copy is behind, and its address is shown without credentials")
    func neverCopied() throws {
        var policies = month.policies
        let i = try #require(policies.firstIndex { $0.name == "van-ban" })
        var spec = policies[i].repository
        spec.path = "https://kho:mat-khau-bi-mat@dr.quangngai.example.vn/van-ban?token=abc123"
        policies[i].copies = [CopySpec(repository: spec)]
        let data = try ReportBuilder.build(policies: policies, catalog: month.catalog, ledger: month.ledger, scope: month.scope)
        for key in ["van-ban/van-ban-db", "van-ban/van-ban-tep", "van-ban/van-ban-scan"] {
            let d = try dataset(key, in: data)
            #expect(d.copies.status == "behind", "\(key)")
            let item = try #require(d.copies.items.first)
            #expect(item.status == "neverCopied")
            #expect(item.destination == "https://***@dr.quangngai.example.vn/van-ban")
            #expect(item.lagSeconds == nil && item.newestCopied == nil && item.succeeded == 0 && item.failed == 0)
        }
        #expect(data.copies.configured == 5 && data.copies.current == 1 && data.copies.behind == 4 && data.copies.destinations == 6)
        let text = String(decoding: try ReportDocument(data: data, generatedAt: month.scope.to, khoVersion: "0.1.0", host: "kho-test", language: .en).render(.html),
                          as: UTF8.self)
        #expect(!text.contains("mat-khau") && !text.contains("abc123"))
        #expect(text.contains("never copied"))
        #expect(text.contains("Never copied"))
        // kho's own addresses are shown as they are written.
        #expect(CopyLocation.masked(SimulatedMonth.hoTichS3) == SimulatedMonth.hoTichS3)
        #expect(CopyLocation.masked("/srv/dr-site/kho@2/ho-tich") == "/srv/dr-site/kho@2/ho-tich")
        #expect(CopyLocation.masked("s3:http://user:secret@[::1]:9000/bucket/p") == "s3:http://***@[::1]:9000/bucket/p")
    }

    @Test("without copies: every dataset notConfigured, the summary notConfigured, CIS 11.4 not met, in both languages")
    func withoutCopies() throws {
        var policies = month.policies
        for i in policies.indices { policies[i].copies = [] }
        let data = try ReportBuilder.build(policies: policies, catalog: month.catalog, ledger: month.ledger, scope: month.scope)
        #expect(data.datasets.allSatisfy { $0.copies == Copies(status: "notConfigured", allowedLagSeconds: nil, items: []) })
        #expect(data.copies == CopiesSummary(status: "notConfigured", configured: 0, current: 0, behind: 0, destinations: 0, succeeded: 0, failed: 0))
        #expect(data.controls.first { $0.id == "cis-11.4" }?.status == .notMet)
        #expect(data.controls.first { $0.id == "level-3" }?.facts.first { $0.id == "offsiteCopy" }?.met == 0)
        for (language, notMet) in [(ReportLanguage.vi, "Chưa đáp ứng"), (.en, "Not met")] {
            let text = String(decoding: try ReportDocument(data: data, generatedAt: month.scope.to, khoVersion: "0.1.0", host: "kho-test",
                                                           language: language).render(.md), as: UTF8.self)
            #expect(text.contains(notMet))
            #expect(text.contains(language == .vi ? "**Bản sao tại địa điểm thứ hai**: Chưa cấu hình" : "**Copies at a second site**: Not configured"))
        }
    }

    @Test("the offsiteCopy control: met only by datasets whose copies are current, with the RPO rule in its evidence text in both languages")
    func control() throws {
        func control(_ id: String) throws -> Control { try #require(data.controls.first { $0.id == id }, "control \(id)") }
        let cis = try control("cis-11.4")
        let offsite = try #require(cis.facts.first { $0.id == "offsiteCopy" })
        #expect((offsite.met, offsite.of) == (1, 6))
        #expect(offsite.failing == SimulatedMonth.datasets.filter { $0 != "ho-tich/ho-tich-db" })
        #expect(cis.status == .partlyMet)
        let level3 = try #require(try control("level-3").facts.first { $0.id == "offsiteCopy" })
        #expect((level3.met, level3.of, level3.failing) == (1, 2, ["dat-dai/dat-dai-db"]))
        let vi = Formatter(language: .vi, timeZone: "Asia/Ho_Chi_Minh").factLabel(offsite)
        let en = Formatter(language: .en, timeZone: "Asia/Ho_Chi_Minh").factLabel(offsite)
        #expect(vi.contains("cập nhật đến cuối kỳ") && vi.contains("không quá RPO"), "\(vi)")
        #expect(en.contains("current at the period end") && en.contains("no more than the RPO"), "\(en)")
    }

    @Test("Markdown shows each destination, the copy failures and the summary", arguments: ReportLanguage.allCases)
    func markdown(language: ReportLanguage) throws {
        let text = String(decoding: try month.document(language).render(.md), as: UTF8.self)
        let hoTich = try dataset("ho-tich/ho-tich-db")
        let datDai = try dataset("dat-dai/dat-dai-db")
        let hoTichSnapshot = try #require(hoTich.backups.lastGood?.snapshot.prefix(8))
        let datDaiSnapshot = try #require(datDai.copies.items.first?.newestCopied?.snapshot.prefix(8))
        let phrases: [String]
        if language == .vi {
            phrases = [
                "**Bản sao tại địa điểm thứ hai**: Bị chậm",
                "| Bộ dữ liệu có cấu hình bản sao | Bản sao đã cập nhật đến cuối kỳ | Bản sao bị chậm | Nơi nhận | Lượt sao chép thành công | Lượt sao chép thất bại |",
                "| 2 / 6 | 1 / 2 | 1 | 3 | 82 | 6 |",
                "- Bản sao tại địa điểm thứ hai: Đã cập nhật (độ trễ cho phép (RPO) ≤ 1 ngày)",
                "- Bản sao tại địa điểm thứ hai: Bị chậm (độ trễ cho phép (RPO) ≤ 1 ngày)",
                "- Bản sao tại địa điểm thứ hai: Chưa cấu hình (chính sách không có copies:)",
                "| Nơi nhận bản sao | Lượt sao chép trong kỳ: thành công / thất bại | Điểm khôi phục mới nhất đã sao chép | Độ trễ so với bản sao lưu tốt mới nhất (cuối kỳ) | Kết quả |",
                "| \(SimulatedMonth.drSite) | 28 / 0; dữ liệu thêm 336,0 kB | 30/11/2026 01:30 (bản chụp \(hoTichSnapshot)) | 0 (đã có bản sao lưu tốt mới nhất) | Đã cập nhật |",
                "| \(SimulatedMonth.hoTichS3) | 28 / 3 (3 bù lại từ lượt trước); dữ liệu thêm 336,0 kB | 30/11/2026 01:30 (bản chụp \(hoTichSnapshot)) | 0 (đã có bản sao lưu tốt mới nhất) | Đã cập nhật |",
                "| \(SimulatedMonth.datDaiS3) | 26 / 3; dữ liệu thêm 312,0 kB | 27/11/2026 02:00 (bản chụp \(datDaiSnapshot)) | 3 ngày | Bị chậm |",
                "**Lượt sao chép lỗi trong kỳ**",
                "| 03/11/2026 01:32 | \(SimulatedMonth.hoTichS3) | \(SimulatedMonth.hoTichS3) cannot be reached:",
                "Bộ dữ liệu có bản sao tại địa điểm thứ hai, cập nhật đến cuối kỳ (mọi nơi nhận chậm không quá RPO so với bản sao lưu tốt mới nhất): 1 / 6",
                "Bộ dữ liệu có bản sao «đã cập nhật» khi mọi nơi nhận có độ trễ không quá RPO",
            ]
        } else {
            phrases = [
                "**Copies at a second site**: Behind",
                "| 2 / 6 | 1 / 2 | 1 | 3 | 82 | 6 |",
                "- Copies at a second site: Current (allowed lag (RPO) ≤ 1 d)",
                "- Copies at a second site: Not configured (the policy has no copies:)",
                "| \(SimulatedMonth.drSite) | 28 / 0; added 336.0 kB | 2026-11-30 01:30 (snapshot \(hoTichSnapshot)) | 0 (holds the newest good backup) | Current |",
                "| \(SimulatedMonth.hoTichS3) | 28 / 3 (3 caught up from earlier runs); added 336.0 kB | 2026-11-30 01:30 (snapshot \(hoTichSnapshot)) | 0 (holds the newest good backup) | Current |",
                "| \(SimulatedMonth.datDaiS3) | 26 / 3; added 312.0 kB | 2026-11-27 02:00 (snapshot \(datDaiSnapshot)) | 3 d | Behind |",
                "**Copy failures in the period**",
                "| 2026-11-28 02:02 | \(SimulatedMonth.datDaiS3) | \(SimulatedMonth.datDaiS3) cannot be reached:",
                "Datasets with copies at a second site, current at the period end (every destination no more than the RPO behind the newest good backup): 1 / 6",
            ]
        }
        for phrase in phrases { #expect(text.contains(phrase), "\(phrase)") }
    }

    @Test("HTML shows the copies per dataset and in the summary", arguments: ReportLanguage.allCases)
    func html(language: ReportLanguage) throws {
        let text = String(decoding: try month.document(language).render(.html), as: UTF8.self)
        let vi = language == .vi
        for phrase in [
            "<caption>\(vi ? "Bản sao tại địa điểm thứ hai" : "Copies at a second site") <span class=\"badge fail\">\(vi ? "Bị chậm" : "Behind")</span></caption>",
            "<td>2 / 6</td><td>1 / 2</td><td>1</td><td>3</td><td>82</td><td>6</td>",
            "<td class=\"mono\">\(SimulatedMonth.drSite)</td><td>28 / 0<div class=\"note\">\(vi ? "dữ liệu thêm: 336,0 kB" : "added: 336.0 kB")</div></td>",
            "<td class=\"mono\">\(SimulatedMonth.hoTichS3)</td><td>28 / 3 (3 \(vi ? "bù lại từ lượt trước" : "caught up from earlier runs"))",
            "<td>\(vi ? "3 ngày" : "3 d")</td><td><span class=\"badge fail\">\(vi ? "Bị chậm" : "Behind")</span></td>",
            "<span class=\"badge pass\">\(vi ? "Đã cập nhật" : "Current")</span>",
            "<span class=\"badge notApplicable\">\(vi ? "Chưa cấu hình" : "Not configured")</span>",
            "<caption>\(vi ? "Lượt sao chép lỗi trong kỳ" : "Copy failures in the period")</caption>",
        ] {
            #expect(text.contains(phrase), "\(phrase)")
        }
    }

    @Test("CSV: the copies' status, destinations, largest lag and runs per dataset", arguments: ReportLanguage.allCases)
    func csv(language: ReportLanguage) throws {
        let text = String(decoding: try month.document(language).render(.csv), as: UTF8.self)
        let records = CSVRenderer.parse(String(text.dropFirst()))
        func column(_ key: String) throws -> Int { try #require(L.csvColumns.firstIndex { $0.key == key }) }
        func row(_ source: String) throws -> [String] { try #require(records.first { $0[try column("source")] == source }) }
        let vi = language == .vi
        let expected: [(String, [String])] = [
            ("ho-tich-db", [vi ? "Đã cập nhật" : "Current", "2", "2", "0", "56", "3"]),
            ("dat-dai-db", [vi ? "Bị chậm" : "Behind", "1", "0", "259200", "26", "3"]),
            ("van-ban-db", [vi ? "Chưa cấu hình" : "Not configured", "0", "0", "", "0", "0"]),
        ]
        for (source, values) in expected {
            let r = try row(source)
            let got = try ["copies", "copyDestinations", "copyDestinationsCurrent", "copyLagMax", "copyRunsSucceeded", "copyRunsFailed"].map { r[try column($0)] }
            #expect(got == values, "\(source)")
        }
        #expect(try row("dat-dai-db")[try column("copyDetails")] == "\(SimulatedMonth.datDaiS3): \(vi ? "Bị chậm, 3 ngày" : "Behind, 3 d")")
    }

    @Test("JSON carries the copies; --check catches an edited lag")
    func jsonAndCheck() throws {
        let document = try month.document(.en)
        let bytes = try document.render(.json)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        let copies = try #require((object["data"] as? [String: Any])?["copies"] as? [String: Any])
        #expect(copies["status"] as? String == "behind")
        #expect(copies["configured"] as? Int == 2 && copies["current"] as? Int == 1)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\"lagSeconds\" : 259200"))
        #expect(text.contains("\"status\" : \"neverCopied\"") == false)
        let recompute: (ReportScope) throws -> ReportData = { scope in
            try ReportBuilder.build(policies: month.policies, catalog: month.catalog, ledger: month.ledger, scope: scope)
        }
        #expect(try ReportDocument.check(bytes, khoVersion: "0.1.0", recompute: recompute).matches)
        let edited = Array(text.replacingOccurrences(of: "\"lagSeconds\" : 259200", with: "\"lagSeconds\" : 0").utf8)
        let result = try ReportDocument.check(edited, khoVersion: "0.1.0", recompute: recompute)
        #expect(!result.matches)
        #expect(result.differences.contains { $0.contains("lagSeconds") }, "\(result.differences)")
    }
}
