import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade",
        abstract: "Bind the config of a repository made before configs were authenticated to its key.",
        discussion: """
        Writes `config` again with its authenticator (docs/FORMAT.md, section 4) and replaces the
        key file that opened the repository with one that requires it; from then on a config
        changed by whoever can write the storage (append-only or object lock removed, sizes
        changed) is an integrity error (exit 12). Other key files keep working. Repositories under
        object lock cannot rewrite their config: move them with `kho rekey`. Nothing to do (exit 0)
        when the config is authenticated already.
        """
    )

    @OptionGroup var repository: RepositoryOptions

    func run() throws {
        let (repo, password) = try repository.openWithPassword()
        let lock = try Signals.lock(repo.storage, exclusive: true, command: "upgrade", wait: try repository.lockWaitSeconds())
        defer { Signals.unlock(lock) }
        if try repo.upgradeConfig(password: password) {
            Terminal.out("the config of \(repo.storage.location) is now bound to its key; key \(repo.keyID.prefix(8)) was replaced by one that requires it")
        } else {
            Terminal.out("the config of \(repo.storage.location) is authenticated already: nothing to do")
        }
    }
}
