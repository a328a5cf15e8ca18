import KhoSupport

/// Which stored dump of a snapshot a restore loads or writes out: the one database of a database
/// snapshot, the one named (`--database`, its name at backup time), or the one stream of a stream
/// snapshot; with the database's part of the manifest to compare the result with.
public enum DumpSelector {
    public static func dump(in snapshot: Snapshot, database: String? = nil) throws -> (file: String, manifest: DumpManifest.Database?) {
        let (file, manifest) = try recorded(in: snapshot, database: database)
        // The name comes from the snapshot: a name with a path in it is not one kho wrote.
        guard Node.isPlainName(file) else {
            throw KhoError(.integrity, "Snapshot \(snapshot.shortID) names its dump \(file.debugDescription), which is not a plain file name: the repository was written by something other than kho; do not restore from it.")
        }
        return (file, manifest)
    }

    private static func recorded(in snapshot: Snapshot, database: String?) throws -> (file: String, manifest: DumpManifest.Database?) {
        // A base backup's one path is a data directory, not a dump a server could load.
        guard snapshot.source.sourceKind != .postgresBase else {
            throw KhoError(.usage, "Snapshot \(snapshot.shortID) is a base backup (a data directory), not a dump: restore it with --target DIR, which writes DIR/data.")
        }
        if let manifest = DumpManifest(snapshot.manifest) {
            let choices = manifest.databases
            if let database {
                guard let match = choices.first(where: { $0.name == database }) else {
                    throw KhoError(.usage, "Snapshot \(snapshot.shortID) holds no database \(database); it holds \(choices.map(\.name).joined(separator: ", ")).")
                }
                return (match.file, match)
            }
            guard choices.count == 1, let only = choices.first else {
                throw KhoError(.usage, "Snapshot \(snapshot.shortID) holds several databases (\(choices.map(\.name).joined(separator: ", "))): choose one with --database NAME.")
            }
            return (only.file, only)
        }
        let files = snapshot.paths
        if let database, files.contains(database) { return (database, nil) }
        guard files.count == 1, let only = files.first, snapshot.source.sourceKind != .files else {
            throw KhoError(.usage, "Snapshot \(snapshot.shortID) is not a single dump: restore it with --target DIR, or name the file with --database.")
        }
        return (only, nil)
    }
}
