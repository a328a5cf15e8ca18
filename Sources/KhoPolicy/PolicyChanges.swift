import Foundation
import KhoCatalog
import KhoCore
import KhoStorage
import KhoSupport

/// Notices policy files that changed since the last run and writes each change to the ledger,
/// keyed with the policy's repository. A change is marked as seen (its hash kept in
/// policy-hashes.json) only once its ledger entry is written: a change whose entry failed is
/// recorded again at the next run.
public enum PolicyChanges {
    public static func record(policies: [Policy], stateDirectory: String) throws {
        let path = stateDirectory + "/policy-hashes.json"
        var seen: [String: String] = [:]
        if let data = FileManager.default.contents(atPath: path) {
            do {
                seen = try JSONDecoder().decode([String: String].self, from: data)
            } catch {
                // An unreadable file forgets nothing that matters: every policy is recorded as new.
                seen = [:]
            }
        }
        let old = seen
        var current: [String: String] = [:]
        for policy in policies {
            guard let data = FileManager.default.contents(atPath: policy.file) else { continue }
            current[policy.name] = try SHA256.hash(Array(data)).hex
        }
        guard current != old else { return }
        var failure: Error?
        do {
            let ledger = try AuditLedger(stateDirectory: stateDirectory)
            for (name, hash) in current.sorted(by: { $0.key < $1.key }) where old[name] != hash {
                let policy = policies.first { $0.name == name }
                let file = policy?.file ?? name
                try ledger.append(command: "policy change", arguments: [file, old[name].map { "from \($0.prefix(12))" } ?? "new", "to \(hash.prefix(12))"],
                                  outcome: "picked up by kho run", witnesses: policy.map(witnesses) ?? [])
                seen[name] = hash
            }
            for name in old.keys.sorted() where current[name] == nil {
                try ledger.append(command: "policy change", arguments: [name, "removed"], outcome: "picked up by kho run",
                                  witnesses: Array(OpenedRepositories.all.prefix(1)))
                seen[name] = nil
            }
        } catch {
            failure = error
        }
        if seen != old {
            do {
                try JSONEncoder().encode(seen).write(to: URL(fileURLWithPath: path), options: .atomic)
            } catch {
                throw KhoError(.failure, "The policy hashes in \(path) cannot be written (\(error.localizedDescription)): fix the state folder; the next run would record the same changes again.")
            }
        }
        if let failure {
            throw KhoError(.failure, "A policy change cannot be recorded in the audit ledger in \(stateDirectory): \((failure as? KhoError)?.message ?? "\(failure)"); it is recorded at the next run once the ledger is writable.")
        }
    }

    /// The policy's repository, opened (and remembered) to key the entry; none when it does not open.
    private static func witnesses(_ policy: Policy) -> [any LedgerWitness] {
        if let known = OpenedRepositories.all.first(where: { $0.storage.location == policy.repository.path }) { return [known] }
        do {
            let repository = try Repository.open(storage: try StorageFactory.make(location: policy.repository.path), password: try policy.repository.password())
            OpenedRepositories.remember(repository)
            return [repository]
        } catch {
            // Unkeyed: the entry is still written, and held in place by the next keyed one.
            return []
        }
    }
}
