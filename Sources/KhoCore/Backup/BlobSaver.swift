import Foundation
import KhoSupport
import Logging

/// Counters of what a saver stored.
package struct SaverStatistics: Sendable {
    package var blobsNew = 0
    package var bytesNewRaw: Int64 = 0
    package var bytesAdded: Int64 = 0
    package var packsWritten = 0
    package var indexFilesWritten = 0
}

/// The write half of the pipeline: deduplicates blobs, then compresses, seals and packs the new ones
/// on worker threads and uploads full packs on uploader threads. Index files follow the packs they
/// list; nothing here writes a snapshot.
///
/// `save` is called from one thread (the reader): the blob ID is computed there, so that the reader
/// can build trees without waiting for workers. Memory is bounded by the queue capacities: at most
/// one open pack, `queueCapacity` chunks and `uploadCapacity` closed packs in flight.
public final class BlobSaver: @unchecked Sendable {
    private struct Job: Sendable {
        var id: BlobID
        var kind: BlobKind
        var data: ChunkCopy
    }

    /// A pack ready to be stored: whole in memory, or already streamed to a temporary file that
    /// still needs its header and its name.
    private struct ClosedPack: @unchecked Sendable {
        var bytes: [UInt8]
        var blobs: [PackedBlob]
        var stream: StreamingPack?
    }

    public let repository: Repository
    private let index: MasterIndex
    private let codec: BlobCodec
    private var sessionBlobs = Set<BlobID>()
    /// Small blobs travel in batches, so that a tree of many small files does not cost a lock
    /// hand-off (and a thread wake-up) per file.
    private let jobs: BoundedQueue<[Job]>
    private let buffers: BufferPool
    private var batch: [Job] = []
    private var batchBytes = 0
    private static let batchLimit = 1 << 20
    private let uploads: BoundedQueue<ClosedPack>
    private var workers: [Worker] = []
    private var uploaders: [Worker] = []
    private let failure = FirstError()
    private let pending = Locked<[(pack: BlobID, blobs: [PackedBlob])]>([])
    private let stats = Locked(SaverStatistics())
    private let indexLock = NSLock()
    /// The one pack being filled; workers append sealed blobs to it in turn.
    /// Data and trees go to separate packs: tree packs stay small and are what listing, restore
    /// planning and check read most.
    private let packLock: Locked<[BlobKind: PackBuilder]>
    /// The open pack when the storage can stream files (local folders): blobs go straight to a
    /// temporary file, so no pack is ever held in memory.
    private let streamLock = Locked<[BlobKind: StreamingPack]>([:])
    private let streams: Bool
    private let activeWorkers: Locked<Int>
    private let packsPerIndexFile: Int
    private var finished = false
    private var stopped = false

    public init(repository: Repository, index: MasterIndex, compressionLevel: Int? = nil,
                workers workerCount: Int = Machine.cores, uploaders uploaderCount: Int = 1, packsPerIndexFile: Int = 8) throws {
        self.repository = repository
        self.index = index
        self.codec = try BlobCodec(repository: repository)
        self.packsPerIndexFile = packsPerIndexFile
        jobs = BoundedQueue(capacity: workerCount * 2)
        // As many large chunks as can be on their way at once: queued, being sealed, being batched.
        buffers = BufferPool(keep: workerCount * 3 + 1)
        uploads = BoundedQueue(capacity: uploaderCount)
        packLock = Locked([:])
        // try?: a storage that cannot make a stream writer now gets whole packs, as one without any.
        streams = ((try? repository.storage.makeStreamWriter(for: .data)) ?? nil) != nil
        activeWorkers = Locked(workerCount)
        let level = compressionLevel ?? repository.config.compressionLevel
        for n in 0..<workerCount {
            workers.append(Worker(name: "kho-pack-\(n)") { [self] in packLoop(level: level) })
        }
        for n in 0..<uploaderCount {
            uploaders.append(Worker(name: "kho-upload-\(n)") { [self] in uploadLoop() })
        }
    }

    /// The ID of `data`, stored unless the repository or this session already has it.
    @discardableResult
    public func save(_ data: UnsafeRawBufferPointer, kind: BlobKind) throws -> BlobID {
        let id = try codec.hasher.id(of: data)
        try save(data, id: id, kind: kind)
        return id
    }

    public func save(_ data: [UInt8], kind: BlobKind) throws -> BlobID {
        try data.withUnsafeBytes { try save($0, kind: kind) }
    }

    /// Whether a blob is already stored or queued, so that its content need not be read again.
    public func has(_ id: BlobID) -> Bool {
        sessionBlobs.contains(id) || index.contains(id)
    }

    private func save(_ data: UnsafeRawBufferPointer, id: BlobID, kind: BlobKind) throws {
        try failure.check()
        // A lost lock stops the reading at the next chunk: a slow stream may take long to fill
        // the next pack, and what it still reads could never be recorded.
        try RepositoryLock.checkHeld(repository.storage)
        if has(id) { return }
        sessionBlobs.insert(id)
        batch.append(Job(id: id, kind: kind, data: ChunkCopy(data, pool: buffers)))
        batchBytes += data.count
        if batchBytes >= BlobSaver.batchLimit || batch.count >= 256 {
            try flushBatch()
        }
    }

    private func flushBatch() throws {
        guard !batch.isEmpty else { return }
        let full = batch
        batch = []
        batchBytes = 0
        if !jobs.push(full) {
            try failure.check()
            throw KhoError(.failure, "The backup pipeline stopped unexpectedly.")
        }
    }

    /// Stops the pipeline on the first error: the error is kept for the caller, no new job is
    /// taken and no further pack is uploaded.
    private func stopPipeline(_ error: Error) {
        failure.record(error)
        jobs.close()
        uploads.close()
    }

    /// Seals `job` into its kind's streaming pack (written to storage as it grows); returns the
    /// pack it closed to make room, if any.
    private func appendStreamed(_ job: Job, codec: BlobCodec) throws -> ClosedPack? {
        let (compressed, sealed) = try codec.sealInPlace(job.data.bytes, id: job.id)
        var closed: ClosedPack?
        try streamLock.withLock { open in
            if let current = open[job.kind], current.count + sealed.count > repository.config.packSize {
                closed = ClosedPack(bytes: [], blobs: current.blobs, stream: current)
                open[job.kind] = nil
            }
            let pack = try open[job.kind] ?? StreamingPack(storage: repository.storage)
            open[job.kind] = pack
            try pack.append(id: job.id, kind: job.kind, compressed: compressed, rawLength: job.data.count, sealed: sealed)
        }
        return closed
    }

    /// Seals `job` into its kind's pack in memory; returns the pack it closed to make room, if any.
    private func appendBuffered(_ job: Job, codec: BlobCodec) throws -> ClosedPack? {
        let sealed = try codec.seal(job.data.bytes, id: job.id, kind: job.kind)
        return try packLock.withLock { builders -> ClosedPack? in
            var closed: ClosedPack?
            let builder = builders[job.kind] ?? PackBuilder(targetSize: repository.config.packSize)
            builders[job.kind] = builder
            // Close the open pack first when this blob would take it past the target size, so
            // that a pack's buffer never grows beyond the capacity it was given.
            if !builder.isEmpty && builder.count + sealed.bytes.count > repository.config.packSize {
                let (bytes, blobs) = try builder.finish(sealer: codec.sealer)
                closed = ClosedPack(bytes: bytes, blobs: blobs)
            }
            builder.append(sealed)
            return closed
        }
    }

    private func packLoop(level: Int) {
        let codec: BlobCodec
        do {
            codec = try BlobCodec(repository: repository, compressionLevel: level)
        } catch {
            stopPipeline(error)
            activeWorkers.withLock { $0 -= 1 }
            return
        }
        var newBlobs = 0
        var rawBytes: Int64 = 0
        while let batch = jobs.pop() {
          for job in batch {
            if failure.value != nil { continue }
            // Compress and seal outside the lock; only the copy into the shared pack is serialized.
            let closed: ClosedPack?
            do {
                closed = try streams ? appendStreamed(job, codec: codec) : appendBuffered(job, codec: codec)
                newBlobs += 1
                rawBytes += Int64(job.data.count)
            } catch {
                stopPipeline(error)
                continue
            }
            if let closed, !uploads.push(closed) { break }
          }
        }
        stats.withLock {
            $0.blobsNew += newBlobs
            $0.bytesNewRaw += rawBytes
        }
        // The last worker out closes the last pack.
        let last = activeWorkers.withLock { n -> Bool in n -= 1; return n == 0 }
        if last && failure.value == nil && streams {
            let closed = streamLock.withLock { open -> [ClosedPack] in
                defer { open = [:] }
                return [BlobKind.data, .tree].compactMap { kind in open[kind].map { ClosedPack(bytes: [], blobs: $0.blobs, stream: $0) } }
            }
            for pack in closed { uploads.push(pack) }
        } else if last && failure.value == nil {
            do {
                let closed = try packLock.withLock { builders -> [ClosedPack] in
                    try [BlobKind.data, .tree].compactMap { kind in
                        guard let builder = builders[kind], !builder.isEmpty else { return nil }
                        let (bytes, blobs) = try builder.finish(sealer: codec.sealer)
                        return ClosedPack(bytes: bytes, blobs: blobs)
                    }
                }
                for pack in closed { uploads.push(pack) }
            } catch {
                stopPipeline(error)
            }
        }
    }

    private func uploadLoop() {
        let sealer: Sealer
        do {
            sealer = try repository.makeSealer()
        } catch {
            stopPipeline(error)
            while let pack = uploads.pop() { pack.stream?.abort() }
            return
        }
        while let pack = uploads.pop() {
            if failure.value != nil {
                pack.stream?.abort()
                continue
            }
            do {
                // A lost lock stops the backup at its next pack rather than at its end.
                try RepositoryLock.checkHeld(repository.storage)
                let id: BlobID
                let size: Int
                if let stream = pack.stream {
                    (id, size) = try stream.finish(sealer: sealer)
                } else {
                    id = try SHA256.hash(pack.bytes)
                    size = pack.bytes.count
                    try repository.storage.save(Handle(.data, id.hex), data: pack.bytes)
                }
                stats.withLock {
                    $0.packsWritten += 1
                    $0.bytesAdded += Int64(size)
                }
                let count = pending.withLock { list -> Int in
                    list.append((id, pack.blobs))
                    return list.count
                }
                if count >= packsPerIndexFile { try flushIndex() }
            } catch {
                pack.stream?.abort()
                stopPipeline(error)
            }
        }
    }

    /// Writes an index file for the packs uploaded since the last one.
    private func flushIndex() throws {
        indexLock.lock()
        defer { indexLock.unlock() }
        let packs = pending.withLock { list -> [(pack: BlobID, blobs: [PackedBlob])] in
            let taken = list
            list.removeAll()
            return taken
        }
        guard !packs.isEmpty else { return }
        do {
            _ = try repository.saveIndexFile(IndexFile(packs: packs))
        } catch {
            pending.withLock { $0.append(contentsOf: packs) }
            throw error
        }
        stats.withLock { $0.indexFilesWritten += 1 }
    }

    /// Waits until every blob is packed, uploaded and indexed. After this returns, a snapshot that
    /// refers to the saved blobs may be written.
    package func finish() throws -> SaverStatistics {
        precondition(!finished)
        do { try flushBatch() } catch { abort(error); throw error }
        finished = true
        stopped = true
        jobs.close()
        workers.forEach { $0.join() }
        uploads.close()
        uploaders.forEach { $0.join() }
        if let error = failure.value {
            // Packs that did reach storage stay usable by the next backup.
            // try?: the error thrown is the first one; packs left unindexed are removed by prune
            // after its grace period, and the next backup writes them again.
            try? flushIndex()
            throw error
        }
        try flushIndex()
        return stats.current
    }

    /// Stops the pipeline after a failure elsewhere. Packs already uploaded are indexed, so that
    /// the next backup reuses them; no snapshot refers to anything.
    public func abort(_ reason: Error) {
        guard !stopped else { return }
        stopped = true
        finished = true
        batch = []
        failure.record(reason)
        jobs.close()
        workers.forEach { $0.join() }
        uploads.close()
        uploaders.forEach { $0.join() }
        streamLock.withLock { open in
            open.values.forEach { $0.abort() }
            open = [:]
        }
        // try?: as in `finish` after a failure: `reason` is what the caller reports.
        try? flushIndex()
    }

    package var statistics: SaverStatistics { stats.current }
}

/// A pack being written straight to storage: sealed blobs are appended to a temporary file and
/// hashed as they go; the header, the trailer and the final name (the SHA-256 of all of it) come at
/// `finish`.
final class StreamingPack: @unchecked Sendable {
    private let writer: any StorageStreamWriter
    private let hash: SHA256.Context
    private(set) var blobs: [PackedBlob] = []
    private(set) var count = 0

    init(storage: any Storage) throws {
        hash = try SHA256.Context()
        guard let writer = try storage.makeStreamWriter(for: .data) else {
            throw KhoError(.failure, "The storage cannot stream packs.")
        }
        self.writer = writer
    }

    func append(id: BlobID, kind: BlobKind, compressed: Bool, rawLength: Int, sealed: UnsafeRawBufferPointer) throws {
        try writer.write(sealed)
        try hash.update(sealed)
        blobs.append(PackedBlob(id: id, kind: kind, compressed: compressed, offset: UInt32(count),
                                length: UInt32(sealed.count), rawLength: UInt32(rawLength)))
        count += sealed.count
    }

    /// Writes the header and trailer and gives the file its name; returns the pack ID and size.
    func finish(sealer: Sealer) throws -> (BlobID, Int) {
        var tail = try sealer.seal(PackFormat.encodeHeader(blobs), context: PackFormat.headerContext)
        withUnsafeBytes(of: UInt32(tail.count).littleEndian) { tail.append(contentsOf: $0) }
        try tail.withUnsafeBytes { raw in
            try writer.write(raw)
            try hash.update(raw)
        }
        let id = try hash.finish()
        try writer.commit(as: Handle(.data, id.hex))
        return (id, count + tail.count)
    }

    func abort() { writer.abort() }
}

/// Large buffers kept for reuse. A fresh allocation of a megabyte or more is a fresh mapping whose
/// pages fault in one by one (and, on virtual machines that hand freed memory back to the host,
/// fault in from the host): copying every chunk into such a buffer cost more system time than
/// reading the input. The pool keeps at most `keep` buffers, as many as can be in flight at once,
/// so it holds no more memory than the pipeline's busiest moment already did.
final class BufferPool: @unchecked Sendable {
    /// Smaller copies come from the heap, where malloc already reuses memory.
    static let threshold = 256 << 10
    private static let granule = 1 << 20
    private let keep: Int
    private let lock = NSLock()
    private var free: [UnsafeMutableRawBufferPointer] = []

    init(keep: Int) {
        self.keep = keep
    }

    deinit {
        for buffer in free { buffer.deallocate() }
    }

    /// A buffer of at least `count` bytes: the smallest free one that fits, or a new one rounded
    /// up to whole megabytes so that it fits most later chunks too.
    func take(_ count: Int) -> UnsafeMutableRawBufferPointer {
        lock.lock()
        var best: Int?
        for (i, buffer) in free.enumerated() where buffer.count >= count {
            if best.map({ free[$0].count > buffer.count }) ?? true { best = i }
        }
        let found = best.map { free.remove(at: $0) }
        lock.unlock()
        if let found { return found }
        let size = (count + BufferPool.granule - 1) / BufferPool.granule * BufferPool.granule
        return UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    }

    /// Takes a buffer back; beyond `keep`, the largest is freed (a rare long chunk's buffer should
    /// not stay, holding memory that common chunks do not need).
    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        lock.lock()
        free.append(buffer)
        var dropped: UnsafeMutableRawBufferPointer?
        if free.count > keep, let largest = free.indices.max(by: { free[$0].count < free[$1].count }) {
            dropped = free.remove(at: largest)
        }
        lock.unlock()
        dropped?.deallocate()
    }
}

/// A chunk's bytes on their way to a worker; large ones live in a pooled buffer that goes back to
/// the pool when the job is done (or dropped after a failure).
final class ChunkCopy: @unchecked Sendable {
    private let buffer: UnsafeMutableRawBufferPointer
    let count: Int
    private let pool: BufferPool?

    init(_ data: UnsafeRawBufferPointer, pool: BufferPool) {
        count = data.count
        if data.count >= BufferPool.threshold {
            self.pool = pool
            buffer = pool.take(data.count)
        } else {
            self.pool = nil
            buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, data.count), alignment: 16)
        }
        if data.count > 0 { buffer.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: data.count) }
    }

    deinit {
        if let pool { pool.give(buffer) } else { buffer.deallocate() }
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: buffer.baseAddress, count: count) }
}
