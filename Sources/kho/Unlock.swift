import ArgumentParser
import Foundation
import KhoCore

struct Unlock: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove stale locks (their process is gone, or they were not refreshed for 30 minutes).",
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
        let left = try RepositoryLock.list(storage: storage)
        for (name, info) in left {
            Terminal.out("kept lock \(name.prefix(8)) of \(info.holder): its process is alive (use --remove-all if you are sure it is not)")
        }
        if removed.isEmpty && left.isEmpty { Terminal.out("no locks") }
    }
}
