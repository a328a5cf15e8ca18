import Foundation
import KhoCore
import KhoSupport

public enum ReportFormat: String, CaseIterable, Sendable, Codable {
    case html, json, md, csv
}

/// What every report states about itself, and what `kho report --check` reads back: the period
/// and policy filter to recompute, and the SHA-256 of the data to compare with.
public struct ReportMeta: Codable, Sendable, Equatable {
    public var format: String
    public var schemaVersion: Int
    public var generatedAt: Date
    public var khoVersion: String
    public var host: String
    public var language: ReportLanguage
    public var periodFrom: Date
    public var periodTo: Date
    public var policy: String?
    public var dataSHA256: String

    public var scope: ReportScope { ReportScope(from: periodFrom, to: periodTo, policy: policy) }
}

/// A report: the data and the facts about how it was made.
public struct ReportDocument: Sendable {
    /// The version of the report's JSON layout (docs/report.schema.json). Raised on any change
    /// that a consumer or an old report's `--check` would notice.
    /// Version 2: copies per dataset (destinations, runs, newest copied point, lag, status) and
    /// in the summary.
    public static let schemaVersion = 2
    public static let formatName = "kho-report"

    public var meta: ReportMeta
    public var data: ReportData

    public init(data: ReportData, generatedAt: Date, khoVersion: String, host: String, language: ReportLanguage) throws {
        self.data = data
        meta = ReportMeta(format: ReportDocument.formatName, schemaVersion: ReportDocument.schemaVersion, generatedAt: generatedAt,
                          khoVersion: khoVersion, host: host, language: language, periodFrom: data.period.from,
                          periodTo: data.period.to, policy: data.period.policy, dataSHA256: try ReportDocument.hash(data))
    }

    init(meta: ReportMeta, data: ReportData) {
        self.meta = meta
        self.data = data
    }

    /// The canonical JSON of the data: sorted keys, no insignificant spaces, RFC 3339 times.
    public static func canonical(_ data: ReportData) throws -> [UInt8] {
        Array(try JSON.encoder.encode(data))
    }

    public static func hash(_ data: ReportData) throws -> String {
        try SHA256.hash(try canonical(data)).hex
    }

    public func render(_ format: ReportFormat) throws -> [UInt8] {
        switch format {
        case .json: return try renderJSON()
        case .html: return Array(HTMLRenderer(document: self).render().utf8)
        case .md: return Array(MarkdownRenderer(document: self).render().utf8)
        case .csv: return Array(CSVRenderer(document: self).render().utf8)
        }
    }

    /// The JSON report: the data with a header stating how it was made.
    struct Envelope: Codable {
        struct Generated: Codable {
            var at: Date
            var khoVersion: String
            var host: String
            var language: ReportLanguage
        }
        var format: String
        var schemaVersion: Int
        var generated: Generated
        var dataSHA256: String
        var data: ReportData
    }

    func renderJSON() throws -> [UInt8] {
        let envelope = Envelope(format: meta.format, schemaVersion: meta.schemaVersion,
                                generated: .init(at: meta.generatedAt, khoVersion: meta.khoVersion, host: meta.host, language: meta.language),
                                dataSHA256: meta.dataSHA256, data: data)
        return Array(try JSON.prettyEncoder.encode(envelope)) + [0x0a]
    }

    /// The metadata as one line of JSON, for the formats that carry it in a comment or an
    /// attribute. `>` is written as \u003e so that the text can never close an HTML comment.
    func metaLine() -> String {
        // try?: encoding a struct of strings and dates does not fail; "{}" only keeps the type total.
        let text = (try? JSON.encoder.encode(meta)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return text.replacingOccurrences(of: ">", with: "\\u003e")
    }
}

// MARK: checking a copy

public struct ReportCheckResult: Sendable {
    public var format: ReportFormat
    public var meta: ReportMeta
    /// The SHA-256 of the data recomputed from the catalog.
    public var computedSHA256: String
    public var dataMatches: Bool
    /// Whether the file's text was compared with a fresh rendering (only when the same kho
    /// version made it), and whether it was equal.
    public var textCompared: Bool
    public var textMatches: Bool
    /// Where the data differ (JSON reports) or where the text first differs.
    public var differences: [String]

    public var matches: Bool { dataMatches && (!textCompared || textMatches) }
}

extension ReportDocument {
    /// Reads what a report file says about itself: its format and metadata.
    public static func readMeta(_ bytes: [UInt8]) throws -> (ReportFormat, ReportMeta) {
        var text = String(decoding: bytes, as: UTF8.self)
        if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        func notAReport(_ why: String) -> KhoError {
            KhoError(.usage, "This file is not a kho report (\(why)): give a file written by `kho report`.")
        }
        if trimmed.hasPrefix("{") {
            // try?: any decoding error means the same thing here: not a report.
            guard let envelope = try? JSON.decoder.decode(Envelope.self, from: Data(trimmed.utf8)), envelope.format == formatName else {
                throw notAReport("JSON without the report's header and data")
            }
            let meta = ReportMeta(format: envelope.format, schemaVersion: envelope.schemaVersion, generatedAt: envelope.generated.at,
                                  khoVersion: envelope.generated.khoVersion, host: envelope.generated.host,
                                  language: envelope.generated.language, periodFrom: envelope.data.period.from,
                                  periodTo: envelope.data.period.to, policy: envelope.data.period.policy, dataSHA256: envelope.dataSHA256)
            return (.json, meta)
        }
        if trimmed.hasPrefix("<!DOCTYPE html") || trimmed.hasPrefix("<html") {
            let marker = "<meta name=\"kho-report\" content=\""
            guard let start = text.range(of: marker), let end = text[start.upperBound...].firstIndex(of: "\"") else {
                throw notAReport("an HTML page without the kho-report meta element")
            }
            return (.html, try decodeMeta(HTMLRenderer.unescape(String(text[start.upperBound..<end]))))
        }
        if trimmed.hasPrefix("<!-- kho-report ") {
            guard let end = trimmed.range(of: " -->") else { throw notAReport("an unterminated kho-report comment") }
            return (.md, try decodeMeta(String(trimmed[trimmed.index(trimmed.startIndex, offsetBy: 16)..<end.lowerBound])))
        }
        if let meta = CSVRenderer.readMeta(text) { return (.csv, meta) }
        throw notAReport("neither JSON, HTML, Markdown nor CSV as kho writes them")
    }

    static func decodeMeta(_ text: String) throws -> ReportMeta {
        do {
            return try JSON.decoder.decode(ReportMeta.self, from: Data(text.utf8))
        } catch {
            throw KhoError(.usage, "The report's metadata cannot be read (\(error)): the file was damaged or edited.")
        }
    }

    /// Recomputes the data for the period and policy the file states and compares: first the
    /// SHA-256 of the data, then, when this kho version made the file, its whole text (so that a
    /// figure edited in the page is caught even where the hash was left alone).
    public static func check(_ bytes: [UInt8], khoVersion: String, recompute: (ReportScope) throws -> ReportData) throws -> ReportCheckResult {
        let (format, meta) = try readMeta(bytes)
        guard meta.schemaVersion == schemaVersion else {
            throw KhoError(.usage, "The report uses schema version \(meta.schemaVersion); this kho writes and checks version \(schemaVersion): check it with the kho version that made it (\(meta.khoVersion)).")
        }
        let data = try recompute(meta.scope)
        let computed = try hash(data)
        var result = ReportCheckResult(format: format, meta: meta, computedSHA256: computed, dataMatches: computed == meta.dataSHA256,
                                       textCompared: false, textMatches: false, differences: [])
        // try?: the field-by-field differences are an aid; the hashes above decide.
        if format == .json, let fileData = jsonDataSection(bytes), let fresh = try? JSONSerialization.jsonObject(with: Data(try canonical(data))) {
            JSONDifference.collect(fileData, fresh, path: "data", into: &result.differences, limit: 12)
        }
        if meta.khoVersion == khoVersion {
            let fresh = try ReportDocument(meta: ReportDocument.metaWithHash(meta, computed), data: data).render(format)
            result.textCompared = true
            result.textMatches = fresh == bytes
            if !result.textMatches && result.differences.isEmpty, let line = firstDifferentLine(bytes, fresh) {
                result.differences.append(line)
            }
        }
        return result
    }

    /// The file's metadata with the recomputed hash: a rendering that would be equal to the file
    /// only if the data are the same.
    static func metaWithHash(_ meta: ReportMeta, _ hash: String) -> ReportMeta {
        var copy = meta
        copy.dataSHA256 = hash
        return copy
    }

    static func jsonDataSection(_ bytes: [UInt8]) -> Any? {
        // try?: a file that does not parse has no data section to compare.
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return nil }
        return object["data"]
    }

    static func firstDifferentLine(_ a: [UInt8], _ b: [UInt8]) -> String? {
        let left = String(decoding: a, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        let right = String(decoding: b, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        for i in 0..<max(left.count, right.count) {
            let l = i < left.count ? String(left[i]) : ""
            let r = i < right.count ? String(right[i]) : ""
            if l != r {
                func clip(_ s: String) -> String { s.count > 160 ? String(s.prefix(160)) + "…" : s }
                return "line \(i + 1): the file has \"\(clip(l.trimmingCharacters(in: .whitespaces)))\", the catalog gives \"\(clip(r.trimmingCharacters(in: .whitespaces)))\""
            }
        }
        return nil
    }
}

/// Paths where two JSON values differ, for telling what changed.
enum JSONDifference {
    static func collect(_ a: Any?, _ b: Any?, path: String, into out: inout [String], limit: Int) {
        guard out.count < limit else { return }
        switch (a, b) {
        case let (x as [String: Any], y as [String: Any]):
            for key in Set(x.keys).union(y.keys).sorted() {
                collect(x[key], y[key], path: path + "." + key, into: &out, limit: limit)
            }
        case let (x as [Any], y as [Any]):
            if x.count != y.count { out.append("\(path): \(x.count) items in the file, \(y.count) from the catalog") }
            for i in 0..<min(x.count, y.count) { collect(x[i], y[i], path: "\(path)[\(i)]", into: &out, limit: limit) }
        default:
            if !same(a, b) { out.append("\(path): the file has \(show(a)), the catalog gives \(show(b))") }
        }
    }

    static func same(_ a: Any?, _ b: Any?) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case (is NSNull, is NSNull): return true
        case let (x as NSNumber, y as NSNumber): return x == y
        case let (x as String, y as String): return x == y
        default: return false
        }
    }

    static func show(_ value: Any?) -> String {
        switch value {
        case nil: return "nothing"
        case is NSNull: return "null"
        case let s as String: return "\"\(s.prefix(80))\""
        case let n as NSNumber: return n.stringValue
        default: return "a different structure"
        }
    }
}
