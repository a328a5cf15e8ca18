import KhoSupport
/// Append-only repositories (`kho init --append-only`): backups and copies add to them; forget and
/// prune refuse. The flag lives in `config`, which whoever can write the storage can also rewrite:
/// on a local disk or a share it guards against mistakes, not against an attacker. Only storage
/// that refuses deletes (S3 Object Lock, a WORM volume) guards against one.
extension Repository {
    public var isAppendOnly: Bool { config.appendOnly == true }

    /// Throws (exit 1) when the repository is append-only.
    public func refuseRemovalIfAppendOnly(command: String) throws {
        guard isAppendOnly else { return }
        throw KhoError(.failure, "The repository at \(storage.location) is append-only (created with `kho init --append-only`): \(command) removes data and is refused. Snapshots stay until the repository is retired; copy what you need elsewhere with `kho copy`.")
    }
}
