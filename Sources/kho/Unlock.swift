import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Unlock: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unlock",
        abstract: "Remove stale locks (their process on this host is gone, or another host's lock was not refreshed for 30 minutes).",
        discussion: "Does not need the password: lock files hold no secret."
    )

    @OptionGroup var repository: RepositoryOptions

    @Flag(name: .customLong("remove-all"), help: "Remove every lock, also those of running processes. Only when you are sure none is running.")
    var removeAll = false

    func run() throws {
        let storage = try repository.storage()
        _ = try Repository.readConfig(storage: storage)
        let removed = try RepositoryLock.unlock(storage: storage, all: removeAll)
        for (name, info) in removed {
            Terminal.out("removed lock \(name.prefix(8)) held by \(info.holder)")
        }
        let left = try RepositoryLock.scan(storage: storage)
        for file in left {
            switch file {
            case .readable(let name, let info, _):
                Terminal.out("kept lock \(name.prefix(8)) of \(info.holder): its process may be alive (use --remove-all if you are sure it is not)")
            case .unreadable(let name, let reason, _):
                Terminal.out("kept lock file \(name.prefix(8)), which cannot be read (\(reason)): it blocks forget and prune; once you have checked that no kho process uses this repository on any host, remove it with --remove-all")
            }
        }
        if removed.isEmpty && left.isEmpty { Terminal.out("no locks") }
    }
}
