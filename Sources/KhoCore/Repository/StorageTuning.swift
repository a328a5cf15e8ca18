/// How many requests to keep in flight against a storage, decided here once from what the storage
/// says of itself (`readsAreRequests`), never from how its address is spelled.
extension Storage {
    /// Packs uploaded at the same time when the operator does not say (`--connections`): on a
    /// store where every transfer is a request (S3) each upload mostly waits on the network, so
    /// four overlap; on a local folder one keeps the disk writing in order.
    public var suggestedUploaders: Int { readsAreRequests ? 4 : 1 }

    /// Readers for `check --read-data`: each pack is one request of about 16 MiB on S3, so a few
    /// more in flight than cores lets round trips overlap.
    public func suggestedCheckWorkers(_ workers: Int) -> Int { readsAreRequests ? max(workers, 4) : workers }

    /// Readers for a restore: more GETs in flight than cores, so that round trips overlap (the S3
    /// client's pool, KHO_S3_CONNECTIONS, bounds them).
    public func suggestedRestoreWorkers(_ workers: Int) -> Int { readsAreRequests ? max(workers, 8) : workers }
}
