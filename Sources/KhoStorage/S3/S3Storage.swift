import Foundation
import KhoCore
import KhoSupport

/// A repository in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …), addressed path-style and
/// signed with Signature Version 4.
///
/// Objects written whole by one PUT are atomic in S3: a reader sees the old object, the new one or
/// none, never a part. Ranged reads are GETs with `Range`. Requests that time out, lose their
/// connection or get a 5xx (or 429) answer are tried again after a pause that doubles each time;
/// refused credentials (403) and a missing bucket are reported at once. Calls block the calling
/// thread: the engine's workers are threads, and each waits for its own request.
package struct S3Storage: Storage {
    package let address: S3Address
    package let configuration: S3Configuration
    let client: S3Client
    /// Object lock for files written from now on (see S3ObjectLock.swift), shared by copies.
    let retention = Locked<ObjectLockSettings?>(nil)
    /// Whether the server refuses a `PUT` with `If-None-Match: *` over an existing object; nil
    /// until the first `saveIfAbsent` probes it. Shared by copies, so one probe per storage.
    let conditionalWrites = Locked<Bool?>(nil)
    package var readsAreRequests: Bool { true }

    package init(address: S3Address, configuration: S3Configuration) {
        self.address = address
        self.configuration = configuration
        client = S3Client(address: address, configuration: configuration)
    }

    package init(location: String, configuration: S3Configuration) throws {
        let address = try S3Address.parse(location)
        var configuration = configuration
        if configuration.proxy == nil {
            configuration.proxy = try S3Configuration.proxy(for: address, environment: configuration.proxyEnvironment)
        }
        self.init(address: address, configuration: configuration)
    }

    package var location: String { address.description }

    // MARK: the five verbs

    package func save(_ handle: Handle, data: [UInt8]) throws {
        // Files named by the SHA-256 of their bytes (docs/FORMAT.md) carry that name as the signed
        // payload hash: no second pass over a pack, and a server that checks payloads (AWS,
        // MinIO) refuses a body that does not match its name instead of storing it.
        let response = try client.send("PUT", key: address.key(handle), headers: lockHeaders(for: handle, body: data), body: data,
                                       bodyHash: handle.isNamedByContent ? handle.name : nil, what: "write \(handle.path)")
        guard (200...299).contains(response.status) else {
            throw client.failure(response, what: "write \(handle.path)")
        }
    }

    package func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] {
        precondition(offset >= 0 && (length ?? 0) >= 0)
        if length == 0 {
            // There is no empty range in HTTP: ask for the size instead.
            let size = try stat(handle).size
            guard offset <= size else { throw short(handle, offset: offset, wanted: 0, found: 0) }
            return []
        }
        var headers: [String: String] = [:]
        if let length {
            headers["Range"] = "bytes=\(offset)-\(offset + length - 1)"
        } else if offset > 0 {
            headers["Range"] = "bytes=\(offset)-"
        }
        let what = "read \(handle.path)"
        if let length, length > handle.kind.maximumSize { throw handle.kind.tooLarge(handle, size: length, in: address.description) }
        let response = try client.send("GET", key: address.key(handle), headers: headers, what: what,
                                       maxBody: length ?? handle.kind.maximumSize,
                                       tooLarge: { handle.kind.tooLarge(handle, size: $0, in: self.address.description) })
        switch response.status {
        case 200:
            // The whole object (no range asked, or a server that ignores ranges).
            let all = response.bytes
            if offset == 0 && (length == nil || length == all.count) { return all }
            let end = length.map { offset + $0 } ?? max(offset, all.count)
            guard end <= all.count else {
                throw short(handle, offset: offset, wanted: length ?? 0, found: max(0, all.count - offset))
            }
            return Array(all[offset..<end])
        case 206:
            let bytes = response.bytes
            if let length, bytes.count != length {
                throw short(handle, offset: offset, wanted: length, found: bytes.count)
            }
            return bytes
        case 404:
            throw client.notFound(response, handle: handle)
        case 416:
            // The range starts at or past the end: the object exists but is shorter.
            if length == nil { return [] }
            throw short(handle, offset: offset, wanted: length!, found: 0)
        default:
            throw client.failure(response, what: what)
        }
    }

    package func stat(_ handle: Handle) throws -> StoredFile {
        let what = "look up \(handle.path)"
        let response = try client.send("HEAD", key: address.key(handle), what: what)
        switch response.status {
        case 200...299:
            guard let text = response.headers["content-length"], let size = Int(text) else {
                throw KhoError(.storage, "The S3 server at \(address.endpoint) gave no size for \(handle.path): it does not behave like S3.")
            }
            return StoredFile(name: handle.name, size: size)
        case 404:
            // A HEAD answer has no body to tell a missing object from a missing bucket.
            try client.checkBucket()
            throw KhoError.missing(handle, in: location)
        default:
            throw client.failure(response, what: what)
        }
    }

    package func list(_ kind: FileKind) throws -> [StoredFile] {
        if kind.hasNestedFolders { return try list(kind, under: "") }
        if kind == .config {
            do { return [try stat(.config)] } catch let error as KhoError where error.kind == .integrity { return [] }
        }
        let base = address.rootPrefix + kind.folder + "/"
        var result: [StoredFile] = []
        for object in try client.listObjects(prefix: base, limit: nil) {
            let rest = object.key.dropFirst(base.count)
            let name: Substring
            if kind == .data {
                // data/xx/NAME, where xx is the fan-out folder.
                let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0].count == 2 else { continue }
                name = parts[1]
            } else {
                guard !rest.contains("/") else { continue }
                name = rest
            }
            guard !name.isEmpty, !name.hasPrefix(".") else { continue }
            result.append(StoredFile(name: String(name), size: object.size, modified: object.modified))
        }
        return result
    }

    /// `PUT` with `If-None-Match: *`: the server stores the object only if the key is free and
    /// answers 412 otherwise, so of two writers exactly one stores (AWS S3 since 2024-08, MinIO,
    /// moto). A server that ignores the header would let the second PUT replace the first; kho
    /// probes once per storage (two conditional PUTs of a probe object in `locks/`) and, on such a
    /// server, falls back to HEAD then PUT. That fallback is race-free for one writer per name
    /// but not for two writers of one name at the same moment: both can see the name free and
    /// the later PUT wins. Only two clusters pushing the same WAL name at once (a split brain)
    /// can do that, and the archive record check reports that case anyway.
    package func saveIfAbsent(_ handle: Handle, data: [UInt8]) throws -> Bool {
        guard try serverRefusesConditionalOverwrite() else {
            if try exists(handle) { return false }
            try save(handle, data: data)
            return true
        }
        var headers = try lockHeaders(for: handle, body: data)
        headers["If-None-Match"] = "*"
        let what = "write \(handle.path) if absent"
        // AWS answers 409 ConditionalRequestConflict while another conditional write of the key
        // is in flight; asking again gets 412 once that write has finished.
        for attempt in 1...5 {
            let response = try client.send("PUT", key: address.key(handle), headers: headers, body: data,
                                           bodyHash: handle.isNamedByContent ? handle.name : nil, what: what)
            switch response.status {
            case 200...299: return true
            case 412: return false
            case 409 where attempt < 5:
                Thread.sleep(forTimeInterval: 0.05 * Double(attempt))
            default:
                throw client.failure(response, what: what)
            }
        }
        throw KhoError(.storage, "The S3 server at \(address.endpoint) kept answering 409 (conflict) to a conditional write of \(handle.path): another writer keeps writing that name; run the command again once it has finished.")
    }

    /// Finds out (once) whether the server honours `If-None-Match: *` on PUT.
    private func serverRefusesConditionalOverwrite() throws -> Bool {
        if let known = conditionalWrites.current { return known }
        // A name starting with a dot: listings skip it, so a probe left by a crash is invisible
        // to the engine (and removable by hand).
        let probe = Handle(.lock, ".probe-if-none-match-" + Hex.encode(try Random.bytes(8)))
        let what = "probe conditional writes with \(probe.path)"
        var answers: [Int] = []
        for _ in 0..<2 {
            let response = try client.send("PUT", key: address.key(probe), headers: ["If-None-Match": "*"], body: [1], what: what)
            guard (200...299).contains(response.status) || response.status == 412 else { throw client.failure(response, what: what) }
            answers.append(response.status)
        }
        try remove(probe)
        guard (200...299).contains(answers[0]) else {
            throw KhoError(.storage, "The S3 server at \(address.endpoint) refused to create the new object \(probe.path) with If-None-Match (answered \(answers[0])): it does not behave like S3; check the endpoint.")
        }
        let refuses = answers[1] == 412
        conditionalWrites.withLock { $0 = refuses }
        return refuses
    }

    /// For tests: act as on a server that ignores `If-None-Match` (false) or honours it (true).
    package func assumeConditionalWrites(_ honoured: Bool) {
        conditionalWrites.withLock { $0 = honoured }
    }

    /// What the probe found; nil before the first `saveIfAbsent`.
    package var honoursConditionalWrites: Bool? { conditionalWrites.current }

    package func list(_ kind: FileKind, under folder: String) throws -> [StoredFile] {
        let prefix = try StorageFolder.prefix(folder)
        guard kind.hasNestedFolders else {
            if prefix.isEmpty { return try list(kind) }
            throw KhoError(.usage, "\(kind.rawValue) files have no subfolders, so none can be listed under \"\(folder)\": this is a bug in the caller; report it.")
        }
        let base = address.rootPrefix + kind.folder + "/"
        var result: [StoredFile] = []
        // No delimiter: every key below the prefix, at any depth, like the local walk.
        for object in try client.listObjects(prefix: base + prefix, limit: nil) {
            let name = object.key.dropFirst(base.count)
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            // Temporary or probe names, and keys no kho writes (empty components).
            guard !parts.contains(where: { $0.isEmpty || $0.hasPrefix(".") }) else { continue }
            result.append(StoredFile(name: String(name), size: object.size, modified: object.modified))
        }
        return result
    }

    package func remove(_ handle: Handle) throws {
        let what = "remove \(handle.path)"
        var query: [(String, String)] = []
        // A lock file is rewritten while held, so it has several versions: removing only the
        // newest would bring back the one before it. It is never locked, and hiding it behind a
        // delete marker is what releasing it needs.
        if retention.current != nil && handle.kind != .lock {
            // In a versioned (object lock) bucket a plain DELETE only hides the object behind a
            // delete marker; removing the version itself frees the space, and fails while locked.
            guard let version = try removableVersion(handle) else { return }
            if !version.isEmpty { query = [("versionId", version)] }
        }
        let response = try client.send("DELETE", key: address.key(handle), query: query, what: what)
        switch response.status {
        case 200...299:
            return
        case 404:
            // Some servers answer NoSuchKey; removing what is gone is not an error.
            if S3ErrorBody(response.body)?.code == "NoSuchBucket" { throw client.bucketMissing() }
            return
        case 403 where !query.isEmpty && handle.kind == .lock:
            // A bucket whose default retention locked the lock file too: hiding it is enough.
            let hidden = try client.send("DELETE", key: address.key(handle), what: what)
            guard (200...299).contains(hidden.status) || hidden.status == 404 else { throw client.failure(hidden, what: what) }
        case 403 where !query.isEmpty && S3ErrorBody(response.body)?.code == "AccessDenied":
            throw KhoError(.failure, "The S3 server at \(address.endpoint) refused to remove \(handle.path) (AccessDenied): it is still under object lock or the key may not delete versions; run `kho prune` again after the lock date.")
        default:
            throw client.failure(response, what: what)
        }
    }

    package func isEmpty() throws -> Bool {
        try client.listObjects(prefix: address.rootPrefix, limit: 1).isEmpty
    }

    // MARK: beyond the protocol

    /// One request that proves the server answers, the credentials are accepted and the bucket
    /// exists, so that a wrong setting is reported before anything else is tried.
    package func checkAccess() throws {
        _ = try client.listObjects(prefix: address.rootPrefix, limit: 1)
    }

    private func short(_ handle: Handle, offset: Int, wanted: Int, found: Int) -> KhoError {
        KhoError(.integrity, "\(handle.path) is shorter than expected (wanted \(wanted) bytes at offset \(offset), found \(found)): the object is truncated; run `kho check`.")
    }
}
