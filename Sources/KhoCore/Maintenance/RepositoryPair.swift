import KhoSupport

/// Two repositories that snapshots move between (copy, rekey, a policy's copies). Copying a
/// repository into itself would only add locks and take time; for rekey it would keep the very key
/// being retired. One repository can hide under two addresses (a symlink, another endpoint name),
/// so the guard runs twice: on the addresses before anything is opened, on the IDs after.
public enum RepositoryPair {
    /// Refuses `from` and `to` when they are one address; `fix` says what to give instead.
    public static func refuseSameAddress(_ from: String, _ to: String, fix: String) throws {
        guard from != to else {
            throw KhoError(.usage, "--from-repo and --to-repo are the same repository: \(fix).")
        }
    }

    /// Refuses two opened repositories that are one (the same ID), naming them as given.
    public static func refuseSame(_ source: Repository, _ target: Repository, from: String, to: String, fix: String) throws {
        guard source.config.id != target.config.id else {
            throw KhoError(.usage, "\(from) and \(to) are the same repository (id \(source.config.id.prefix(8))): \(fix).")
        }
    }
}
