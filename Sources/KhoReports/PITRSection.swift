import Foundation
import KhoCatalog

/// The newest point-in-time recovery drill of a dataset (an archived cluster), kept apart from the
/// dump drills' figures: what it recovered to and how exactly (docs/design/pitr.md section 8).
public struct PITRDrillSummary: Codable, Sendable, Equatable {
    public var drillID: String
    public var ended: Date
    public var passed: Bool
    public var cluster: String
    public var marker: String?
    public var exactness: PITRExactness
    /// Transactions committed in the marker's window (approximate drills).
    public var committedInWindow: Int?
    public var rtoSeconds: Double?
}

extension PITRDrillSummary {
    /// The newest finished drill whose evidence is a PITR drill's.
    static func newest(_ drills: [DrillView]) -> PITRDrillSummary? {
        guard let view = drills.last(where: { $0.evidence?.pitr != nil }), let evidence = view.evidence, let pitr = evidence.pitr else { return nil }
        return PITRDrillSummary(drillID: view.record.drillID, ended: view.record.ended, passed: view.record.passed, cluster: pitr.cluster,
                                marker: pitr.marker, exactness: pitr.exactness, committedInWindow: pitr.committedInWindow,
                                rtoSeconds: evidence.rtoSeconds)
    }
}

extension L {
    static let lastPITRDrill = Text("Diễn tập khôi phục theo thời điểm gần nhất", "Last point-in-time recovery drill")
    static let exactnessProven = Text("trùng khớp đã chứng minh", "exactness proven")
    static let exactnessApproximate = Text("gần đúng: %d giao dịch hoàn tất trong cửa sổ mốc", "approximate: %d transactions committed in the marker's window")
    static let exactnessUnmeasured = Text("chưa xác định: diễn tập dừng trước khi hỏi được cụm đã khôi phục", "unmeasured: the drill stopped before the recovered cluster could be asked")
    static let exactnessNone = Text("không có mốc: đã thử khôi phục, chưa đối chiếu nội dung", "no marker: recovery tested, content not compared")
}

extension Formatter {
    func pitrSummary(_ p: PITRDrillSummary?) -> String {
        guard let p else { return t(L.never) }
        let exactness: String
        switch p.exactness {
        case .proven: exactness = t(L.exactnessProven)
        case .approximate: exactness = String(format: t(L.exactnessApproximate), p.committedInWindow ?? 0)
        case .none: exactness = t(L.exactnessNone)
        case .unmeasured: exactness = t(L.exactnessUnmeasured)
        }
        return "\(dateTime(p.ended)): \(verdict(p.passed ? .pass : .fail)) — \(exactness)"
    }
}
