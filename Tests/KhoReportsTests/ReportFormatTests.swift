import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import Testing
@testable import KhoReports

enum Paths {
    /// The package root, from this file's path (Tests/KhoReportsTests/ReportFormatTests.swift).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
}

/// A structural JSON Schema check, enough for docs/report.schema.json: $ref into $defs, type,
/// const, enum, required, properties, additionalProperties: false, items, minimum, maximum, pattern.
struct SchemaValidator {
    let root: [String: Any]

    init(path: String) throws {
        root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    func validate(_ value: Any) -> [String] {
        var errors: [String] = []
        check(value, root, "$", &errors)
        return errors
    }

    private func check(_ value: Any, _ schema: [String: Any], _ path: String, _ errors: inout [String]) {
        if let ref = schema["$ref"] as? String {
            let name = String(ref.dropFirst("#/$defs/".count))
            guard let defs = root["$defs"] as? [String: Any], let target = defs[name] as? [String: Any] else {
                errors.append("\(path): unresolved \(ref)")
                return
            }
            check(value, target, path, &errors)
            return
        }
        if let constant = schema["const"] {
            if "\(constant)" != "\(value)" { errors.append("\(path): \(value) is not \(constant)") }
        }
        if let options = schema["enum"] as? [String] {
            if !(value is String) || !options.contains(value as! String) { errors.append("\(path): \(value) is not one of \(options)") }
        }
        if let type = schema["type"] as? String {
            let ok: Bool
            switch type {
            case "object": ok = value is [String: Any]
            case "array": ok = value is [Any]
            case "string": ok = value is String
            case "boolean": ok = value is Bool
            case "integer": ok = (value as? NSNumber).map { $0.doubleValue == $0.doubleValue.rounded() } ?? false
            case "number": ok = value is NSNumber
            default: ok = false
            }
            if !ok { errors.append("\(path): expected \(type), found \(value)"); return }
        }
        if let number = value as? NSNumber, !(value is Bool) {
            if let minimum = schema["minimum"] as? Double, number.doubleValue < minimum { errors.append("\(path): \(number) < \(minimum)") }
            if let maximum = schema["maximum"] as? Double, number.doubleValue > maximum { errors.append("\(path): \(number) > \(maximum)") }
        }
        if let pattern = schema["pattern"] as? String, let text = value as? String {
            let regex = try! NSRegularExpression(pattern: pattern)
            if regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil { errors.append("\(path): \(text) does not match \(pattern)") }
        }
        if let object = value as? [String: Any] {
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for key in schema["required"] as? [String] ?? [] where object[key] == nil {
                errors.append("\(path): required \(key) is missing")
            }
            if schema["additionalProperties"] as? Bool == false {
                for key in object.keys where properties[key] == nil { errors.append("\(path): \(key) is not in the schema") }
            }
            for (key, sub) in properties {
                if let item = object[key], let sub = sub as? [String: Any] { check(item, sub, path + "." + key, &errors) }
            }
        }
        if let array = value as? [Any], let items = schema["items"] as? [String: Any] {
            for (i, item) in array.enumerated() { check(item, items, "\(path)[\(i)]", &errors) }
        }
    }
}

@Suite("report formats and --check")
struct ReportFormatTests {
    let month: SimulatedMonth

    init() throws { month = try SimulatedMonth() }

    func percent(_ part: Int, _ whole: Int, _ language: ReportLanguage) -> String {
        let text = String(format: "%.1f", Double(part) / Double(whole) * 100) + "%"
        return language == .vi ? text.replacingOccurrences(of: ".", with: ",") : text
    }

    @Test("JSON validates against docs/report.schema.json, decodes to the same data, and states the SHA-256 of that data", arguments: ReportLanguage.allCases)
    func json(language: ReportLanguage) throws {
        let document = try month.document(language)
        let bytes = try document.render(.json)
        let object = try JSONSerialization.jsonObject(with: Data(bytes))
        let validator = try SchemaValidator(path: Paths.packageRoot + "/docs/report.schema.json")
        let errors = validator.validate(object)
        #expect(errors.isEmpty, "\(errors.prefix(10))")
        let top = try #require(object as? [String: Any])
        #expect(top["format"] as? String == "kho-report")
        #expect(top["schemaVersion"] as? Int == ReportDocument.schemaVersion)
        #expect(ReportDocument.schemaVersion == 2)
        #expect((top["generated"] as? [String: Any])?["language"] as? String == language.rawValue)
        let envelope = try JSON.decoder.decode(ReportDocument.Envelope.self, from: Data(bytes))
        #expect(envelope.data == document.data)
        #expect(try envelope.dataSHA256 == SHA256.hash(Array(try JSON.encoder.encode(envelope.data))).hex)
        // A damaged report (a required field gone) does not validate.
        var damaged = top
        var data = try #require(damaged["data"] as? [String: Any])
        data.removeValue(forKey: "ledger")
        damaged["data"] = data
        #expect(validator.validate(damaged).contains { $0.contains("ledger") })
    }

    @Test("Markdown carries every dataset's figures, in the report's language", arguments: ReportLanguage.allCases)
    func markdown(language: ReportLanguage) throws {
        let document = try month.document(language)
        let text = String(decoding: try document.render(.md), as: UTF8.self)
        #expect(text.hasPrefix("<!-- kho-report {"))
        for d in document.data.datasets {
            let runs = month.runs(of: d.key)
            let succeeded = runs.filter { $0.outcome == "success" }.count
            let missed = month.planned(d.key) - runs.count
            let row = "| \(d.key) | \(month.planned(d.key)) | \(runs.count) | \(succeeded) | \(runs.filter { $0.outcome == "failure" }.count) | \(runs.filter { $0.outcome == "partial" }.count) | \(missed) | \(percent(succeeded, runs.count + missed, language)) |"
            #expect(text.contains(row), "\(row)")
            #expect(text.contains("### \(d.key) — "))
        }
        #expect(text.contains(document.meta.dataSHA256))
        if language == .vi {
            for phrase in ["đúng - đủ - sạch - sống", "Điểm khôi phục tốt gần nhất", "Thời gian khôi phục", "Diễn tập khôi phục", "Không có bằng chứng",
                           "| ho-tich/ho-tich-db | 30 | 30 | 28 | 2 | 0 | 0 | 93,3% | 3 ngày (Không đạt) | 5 | 15 phút 30 giây (Đạt) | Không đạt |",
                           "| dat-dai/dat-dai-db | 30 | 30 | 28 | 1 | 1 | 0 | 93,3% | 2 ngày (Không đạt) | 2 | 1 giờ 30 phút (Không đạt) | Không đạt |",
                           "Chưa cấu hình", "Nhật ký kiểm toán", "Chuỗi băm toàn vẹn", "Đáp ứng một phần",
                           "ISO/IEC 27001:2022 A.8.13", "CIS Controls v8 11.4", "NIST SP 800-34 / SP 800-53 CP-9", "kỳ: 3 / 6"] {
                #expect(text.contains(phrase), "\(phrase)")
            }
        } else {
            for phrase in ["correct - complete - clean - live", "Last good recovery point", "Restore drills", "No evidence",
                           "| ho-tich/ho-tich-db | 30 | 30 | 28 | 2 | 0 | 0 | 93.3% | 3 d (Fail) | 5 | 15 min 30 s (Pass) | Fail |",
                           "Not configured", "Hash chain intact", "Partly met", "restore took 5400.0 s, more than the RTO of 3600 s"] {
                #expect(text.contains(phrase), "\(phrase)")
            }
            #expect(!text.contains("Đạt"), "no Vietnamese label in the English report")
        }
    }

    @Test("CSV: one row per dataset with its figures; UTF-8 with BOM, CRLF", arguments: ReportLanguage.allCases)
    func csv(language: ReportLanguage) throws {
        let document = try month.document(language)
        let text = String(decoding: try document.render(.csv), as: UTF8.self)
        #expect(text.hasPrefix("\u{FEFF}"))
        #expect(text.contains("\r\n"))
        let records = CSVRenderer.parse(String(text.dropFirst()))
        #expect(records.count == 1 + 6)
        let header = records[0]
        #expect(header.first == (language == .vi ? "Cơ quan" : "Agency"))
        func column(_ key: String) throws -> Int { try #require(L.csvColumns.firstIndex { $0.key == key }) }
        for row in records.dropFirst() {
            #expect(row.count == header.count)
            let key = row[try column("policy")] + "/" + row[try column("source")]
            let runs = month.runs(of: key)
            let succeeded = runs.filter { $0.outcome == "success" }.count
            let missed = month.planned(key) - runs.count
            #expect(row[try column("planned")] == String(month.planned(key)), "\(key)")
            #expect(row[try column("attempted")] == String(runs.count), "\(key)")
            #expect(row[try column("succeeded")] == String(succeeded), "\(key)")
            #expect(row[try column("failed")] == String(runs.filter { $0.outcome == "failure" }.count), "\(key)")
            #expect(row[try column("partial")] == String(runs.filter { $0.outcome == "partial" }.count), "\(key)")
            #expect(row[try column("missed")] == String(missed), "\(key)")
            let rate = (Double(succeeded) / Double(runs.count + missed) * 10000).rounded() / 100
            #expect(Double(row[try column("successRate")]) == rate, "\(key)")
            #expect(row[try column("drills")] == String(month.drills(of: key).count), "\(key)")
            #expect(row[try column("lastRto")] == (month.drills(of: key).last?.rtoSeconds).map { String(Int($0)) } ?? "", "\(key)")
            #expect(row[try column("dataSHA256")] == document.meta.dataSHA256)
            #expect(row[try column("periodFrom")] == Timestamp.format(month.scope.from))
            #expect(row[try column("periodTo")] == Timestamp.format(month.scope.to))
        }
        let hoTich = try #require(records.first { $0.contains("ho-tich-db") })
        #expect(hoTich[try column("worstRpo")] == "259200")
        #expect(hoTich[try column("successRate")] == "93.33")
        #expect(hoTich[try column("overall")] == (language == .vi ? "Không đạt" : "Fail"))
        let scan = try #require(records.first { $0.contains("van-ban-scan") })
        #expect(scan[try column("overall")] == (language == .vi ? "Không có bằng chứng" : "No evidence"))
    }

    @Test("HTML: one self-contained UTF-8 page with its language, every dataset, three SVG charts, A4 print rules, no script", arguments: ReportLanguage.allCases)
    func html(language: ReportLanguage) throws {
        let document = try month.document(language)
        let text = String(decoding: try document.render(.html), as: UTF8.self)
        #expect(text.hasPrefix("<!DOCTYPE html>\n<html lang=\"\(language.rawValue)\">"))
        #expect(text.contains("<meta charset=\"utf-8\">"))
        for forbidden in ["<script", "<link", "src=", "@import", "url(", "href=\"http"] {
            #expect(!text.contains(forbidden), "\(forbidden): the page must stand alone")
        }
        #expect(text.components(separatedBy: "<svg ").count - 1 == 3)
        #expect(text.contains("@page { size: A4"))
        #expect(text.contains("@media print"))
        for d in document.data.datasets { #expect(text.contains(">\(d.key)<") || text.contains(">\(d.key) <"), "\(d.key)") }
        for agency in document.data.agencies { #expect(text.contains(HTMLRenderer.escape(agency.name))) }
        #expect(text.contains(document.meta.dataSHA256))
        if language == .vi {
            for phrase in ["Báo cáo kiểm tra sao lưu và khôi phục dữ liệu", "đúng - đủ - sạch - sống", "Điểm khôi phục đã kiểm chứng gần nhất",
                           "Thời gian khôi phục", "Diễn tập khôi phục", "Sở Tư pháp tỉnh Quảng Ngãi", "93,3%", "Không có bằng chứng"] {
                #expect(text.contains(phrase), "\(phrase)")
            }
        } else {
            #expect(text.contains("Backup and recovery compliance report"))
            #expect(text.contains("93.3%"))
        }
    }

    @Test("--check: an untouched copy in any format and language matches; an edited figure, an edited hash or a changed catalog does not")
    func check() throws {
        let recompute: (ReportScope) throws -> ReportData = { scope in
            try ReportBuilder.build(policies: month.policies, catalog: month.catalog, ledger: month.ledger, scope: scope)
        }
        for language in ReportLanguage.allCases {
            let document = try month.document(language)
            for format in ReportFormat.allCases {
                let bytes = try document.render(format)
                let result = try ReportDocument.check(bytes, khoVersion: "0.1.0", recompute: recompute)
                #expect(result.matches, "\(format) \(language): \(result.differences)")
                #expect(result.format == format)
                #expect(result.meta.language == language)
                #expect(result.textCompared)
                // Made by another kho version: only the data are compared.
                let other = try ReportDocument.check(bytes, khoVersion: "9.9.9", recompute: recompute)
                #expect(other.matches && !other.textCompared)
            }
            // A figure edited in the text, the hash left alone.
            let edits: [(ReportFormat, String, String)] = [
                (.html, language == .vi ? ">93,3%<" : ">93.3%<", language == .vi ? ">99,3%<" : ">99.3%<"),
                (.md, "| 28 | 2 |", "| 29 | 1 |"),
                (.csv, ",93.33,", ",99.33,"),
                (.json, "\"succeeded\" : 28", "\"succeeded\" : 29"),
            ]
            for (format, from, to) in edits {
                let text = String(decoding: try document.render(format), as: UTF8.self)
                #expect(text.contains(from), "\(format) \(language): \(from)")
                let edited = Array(text.replacingOccurrences(of: from, with: to).utf8)
                let result = try ReportDocument.check(edited, khoVersion: "0.1.0", recompute: recompute)
                #expect(!result.matches, "\(format) \(language)")
                #expect(result.dataMatches && !result.textMatches)
                if format == .json { #expect(result.differences.contains { $0.contains("succeeded") }, "\(result.differences)") }
            }
            // The hash edited.
            let html = String(decoding: try document.render(.html), as: UTF8.self)
            let forged = Array(html.replacingOccurrences(of: document.meta.dataSHA256, with: String(repeating: "0", count: 64)).utf8)
            #expect(try !ReportDocument.check(forged, khoVersion: "0.1.0", recompute: recompute).dataMatches)
        }
        // The catalog changed after the report was made: a run inside the period removed its failure.
        let document = try month.document(.vi)
        let bytes = try document.render(.json)
        let failure = try #require(try month.catalog.runs(policy: "ho-tich", source: "ho-tich-db", kind: .backup).first { $0.outcome == .failure })
        var changed = failure
        changed.outcome = .success
        try month.catalog.update(changed)
        let result = try ReportDocument.check(bytes, khoVersion: "0.1.0", recompute: recompute)
        #expect(!result.dataMatches)
        #expect(result.differences.contains { $0.contains("succeeded") })
        // Not a report at all.
        #expect(throws: KhoError.self) { try ReportDocument.check(Array("hello".utf8), khoVersion: "0.1.0", recompute: recompute) }
    }

    @Test("the string table: every id the data uses has a label in both languages; the Vietnamese is written with its diacritics")
    func strings() throws {
        let data = try month.report()
        for d in data.datasets {
            for (key, dimension) in d.dimensions.all {
                #expect(L.dimensionNames[key] != nil && L.dimensionMeanings[key] != nil)
                for m in dimension.metrics { #expect(L.metrics[m.id] != nil, "metric \(m.id)") }
            }
        }
        for c in data.controls {
            #expect(c.id.hasPrefix("level-") || L.controlTitles[c.id] != nil, "control \(c.id)")
            for f in c.facts { #expect(L.facts[f.id] != nil, "fact \(f.id)") }
        }
        for v in Verdict.allCases { #expect(L.verdicts[v] != nil) }
        for s in ControlStatus.allCases { #expect(L.controlStatuses[s] != nil) }
        let vietnamese = L.metrics.values.map(\.vi) + L.facts.values.map(\.vi) + L.controlTitles.values.map(\.vi) + L.methodItems.map(\.vi)
        let marks = CharacterSet(charactersIn: "ăâđêôơưáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵĐ")
        for text in vietnamese {
            #expect(text.unicodeScalars.contains { marks.contains($0) }, "\(text)")
            #expect(text == text.precomposedStringWithCanonicalMapping, "\(text) is not NFC")
        }
        #expect(L.motto.vi == "đúng - đủ - sạch - sống")
        #expect(Formatter(language: .vi, timeZone: "Asia/Ho_Chi_Minh").duration(5400) == "1 giờ 30 phút")
        #expect(Formatter(language: .en, timeZone: "Asia/Ho_Chi_Minh").duration(1.25) == "1.25 s")
        #expect(Formatter(language: .vi, timeZone: "Asia/Ho_Chi_Minh").percent(0.9333) == "93,3%")
        #expect(Formatter(language: .vi, timeZone: "Asia/Ho_Chi_Minh").count(1234567) == "1.234.567")
        #expect(Formatter(language: .vi, timeZone: "Asia/Ho_Chi_Minh").dateTime(SimulatedMonth.local(11, 5, 9, 7)) == "05/11/2026 09:07")
    }
}
