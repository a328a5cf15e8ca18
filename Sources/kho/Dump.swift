import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSupport

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump", abstract: "Write one file of a snapshot (a stored dump) to standard output.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Snapshot: `latest`, an ID or a unique prefix.")
    var snapshot: String

    @Argument(help: "The file inside the snapshot, e.g. the --stdin-name of a stream.")
    var path: String

    func run() throws {
        try repository.withRepository(exclusive: false, command: "dump") { repo in
            let index = try repo.loadIndex()
            let snap = try repo.findSnapshot(snapshot)
            let node = try TreeLookup(repository: repo, index: index).node(at: path, in: snap)
            guard node.kind == .file else {
                throw KhoError(.usage, "\(path) in snapshot \(snap.shortID) is a \(node.kind.name), not a file: `kho dump` writes files only; use `kho restore` for folders.")
            }
            try OrderedBlobReader(repository: repo, index: index, content: node.content).run { bytes in
                try bytes.withUnsafeBytes { try Syscall.writeAll(STDOUT_FILENO, $0, "standard output") }
            }
        }
    }
}
