import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

extension Wal {
    /// After `pg_upgrade` or a rebuilt cluster: retire the source's old cluster, so that the new
    /// one's first segment creates the source's new archive (records are never rewritten).
    struct Adopt: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "adopt",
            abstract: "Retire a source's archived cluster so that a new cluster (after pg_upgrade or a rebuild) can archive for it.",
            discussion: """
            Writes wal/<sysid>/retired for the cluster named by --cluster: its pushes are refused
            from then on, its archived WAL stays for recoveries from its base backups. The next
            cluster that pushes for the source creates the new archive, naming the old one as its
            previous. Take a base backup of the new cluster as soon as it archives.
            """
        )

        @OptionGroup var repository: RepositoryOptions

        @Option(help: "The policy source whose archive moves to another cluster.")
        var source: String

        @Option(help: "The cluster to retire: its system identifier, 16 hex digits as `kho wal ls` shows it.")
        var cluster: String

        func validate() throws {
            try Wal.checkSource(source)
        }

        func run() throws {
            let cluster = try SystemIdentifier(parsing: self.cluster)
            let archive = try WALArchive(repository: try repository.open(), source: source)
            switch try archive.retire(cluster: cluster) {
            case .retired:
                Terminal.out("retired cluster \(cluster)'s archive for source \(source): its pushes are refused from now on, and its archived WAL stays")
            case .alreadyRetired:
                Terminal.out("cluster \(cluster)'s archive for source \(source) was already retired: nothing changed")
            }
            Terminal.out("the next cluster that runs `kho wal push --source \(source)` creates the source's new archive; take a base backup of it then")
        }
    }
}
