import Foundation
import KhoCore
import KhoPolicy

/// A MariaDB source's archived binary log over the report's period (docs/design/pitr.md section
/// 9), judged at the period's end from what the repository holds: objects stored after the end
/// are not counted, so the same repository gives the same figures later.
public struct BinlogSourceReport: Codable, Sendable, Equatable {
    public var policy: String
    public var source: String
    public var archive: String
    public var serverId: UInt32
    public var newestFile: String?
    public var newestStored: Date?
    /// Period end − storage time of the newest object stored by then.
    public var achievedRpoSeconds: Double?
    /// The longest time without a newly stored piece in the period (the tail to the end
    /// included): an upper bound, as an idle server logs nothing and loses nothing.
    public var worstRpoSeconds: Double?
    /// The source's `wal-rpo`, the target the achieved RPO is held against.
    public var rpoSeconds: Double
    public var piecesInPeriod: Int
    /// What a replay would stop at: files never stored, holes, files left without their end.
    public var gaps: [String]

    /// Within the target and continuous; nil when nothing was stored by the period's end.
    public var rpoMet: Bool? { achievedRpoSeconds.map { $0 <= rpoSeconds && gaps.isEmpty } }
}

public enum BinlogSection {
    public static func make(policy: String, archive view: BinlogArchiveView, scope: ReportScope) -> BinlogSourceReport {
        let record = "\(view.archive)/archive"
        // An object the storage gives no time for is taken as stored before the period.
        let stored = view.listed.filter { $0.name != record && ($0.modified ?? .distantPast) <= scope.to }
        let inventory = BinlogArchive.inventory(listed: stored, id: view.archive)
        let pieceTimes = stored.filter { !$0.name.hasSuffix("/end") }.compactMap(\.modified).sorted()
        let newest = stored.compactMap(\.modified).max()
        let inPeriod = pieceTimes.filter { $0 >= scope.from }
        let worst = WALSection.worstGap(sorted: pieceTimes, scope: scope)
        // End markers are not opened (one read per file): a file marked whole whose pieces reach
        // without a hole counts as whole, as in `kho status`; `kho binlog ls` checks the sizes.
        let gaps = BinlogArchive.gaps(inventory.files, whole: inventory.files.map { $0.ended && !$0.holes })
        return BinlogSourceReport(policy: policy, source: view.source, archive: view.archive.description, serverId: view.record.serverId,
                                  newestFile: inventory.files.last?.name.description, newestStored: newest,
                                  achievedRpoSeconds: newest.map { scope.to.timeIntervalSince($0) }, worstRpoSeconds: worst,
                                  rpoSeconds: view.rpoSeconds, piecesInPeriod: inPeriod.count, gaps: gaps)
    }

    /// Every archive of the policies in scope. A repository that cannot be read is an error: a
    /// report that silently left a source out would overstate protection.
    public static func read(policies: [Policy], scope: ReportScope) throws -> [BinlogSourceReport] {
        var result: [BinlogSourceReport] = []
        for policy in policies where scope.policy == nil || policy.name == scope.policy {
            for archive in try BinlogArchiveView.read(policy: policy) {
                result.append(make(policy: policy.name, archive: archive, scope: scope))
            }
        }
        return result
    }
}
