import Foundation
import KhoCore
import KhoSources
import KhoStorage
import KhoSupport

/// A MariaDB source's binary log archive as the compliance report reads it: the record, the
/// source's `wal-rpo`, and every object listed with its storage time, so that the report can judge
/// the archive as it stood at any period's end.
public struct BinlogArchiveView: Sendable {
    public var source: String
    public var rpoSeconds: TimeInterval
    public var archive: BinlogArchiveID
    public var record: BinlogArchiveRecord
    public var listed: [StoredFile]

    public init(source: String, rpoSeconds: TimeInterval, archive: BinlogArchiveID, record: BinlogArchiveRecord, listed: [StoredFile]) {
        self.source = source; self.rpoSeconds = rpoSeconds; self.archive = archive; self.record = record; self.listed = listed
    }

    /// Every archived MariaDB source of `policy`. The repository is opened only when its storage
    /// holds any binary log; a source without an archive record has no archive.
    public static func read(policy: Policy) throws -> [BinlogArchiveView] {
        let candidates = policy.sources.filter { $0.kind == .mariadb }
        guard !candidates.isEmpty else { return [] }
        let storage = try StorageFactory.make(location: policy.repository.path)
        guard try !storage.list(.binlog, under: "").isEmpty else { return [] }
        let repository = try Repository.open(storage: storage, password: try policy.repository.password())
        var result: [BinlogArchiveView] = []
        var seen = Set<String>()
        for source in candidates where seen.insert(source.name).inserted {
            let archive = try BinlogArchive(repository: repository, source: source.name)
            guard let record = try archive.record() else { continue }
            result.append(BinlogArchiveView(source: source.name, rpoSeconds: source.walRPO ?? SourceSpec.defaultWALRPO, archive: archive.id,
                                            record: record, listed: try storage.list(.binlog, under: archive.id.description)))
        }
        return result
    }
}
