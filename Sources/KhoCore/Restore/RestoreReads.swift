import Foundation
import KhoSupport
import Glibc

// How a restore plans its reads: blobs wanted from each pack are gathered, sorted and handed to
// the workers as few reads as the limits allow (on S3 each read is a request).
extension Restorer {
    struct Gathering {
        var jobs: [Job] = []
        var start = Int.max
        var end = 0

        mutating func add(_ job: Job, start: Int, end: Int) {
            jobs.append(job)
            self.start = min(self.start, start)
            self.end = max(self.end, end)
        }
    }

    /// How much one read may cover and how much is gathered before reads are handed out.
    struct RunLimits {
        /// Bytes of pack one read covers at most (all of it is in memory in a worker).
        var bytes: Int
        /// Blobs in one read.
        var blobs: Int
        /// A wider gap between two wanted blobs ends the read: bytes read for nothing.
        var gap: Int
        /// Reads handed out but not yet taken by a worker.
        var queued: Int
        /// Blobs gathered (over all packs) before the largest gathering is handed out.
        var gathered: Int
        /// Packs gathered from at once: on a local disk one, so that blobs are handed out in the
        /// order of the files (a file of many blobs is then written front to back).
        var packs: Int
        /// Folders kept open for files not yet created; the rest of the descriptors are left for
        /// the files being written and the storage's connections.
        var folders: Int
        /// Files whose reads are handed out in turn, so that the workers write different files
        /// at once: ext4 holds a file's lock through each copy into its pages, and two workers
        /// on one file copied one at a time (issue 20's restore to a point: a fifth of the time
        /// spinning on that lock). 1 hands reads out as they are made.
        var lanes: Int = 1
        /// Reads held back for that at most, whatever the files.
        var held: Int = 4096

        /// On a local disk a read is cheap and small reads keep files finishing in order; on
        /// object storage every read is a request, so one read covers up to a whole default pack
        /// and blobs are gathered until most packs are wanted whole.
        static func forStorage(remote: Bool, workers: Int, openFileLimit: Int) -> RunLimits {
            let folders = max(16, openFileLimit / 2)
            guard remote else {
                return RunLimits(bytes: 4 << 20, blobs: 64, gap: 256 << 10, queued: workers * 2, gathered: 64, packs: 1,
                                 folders: folders, lanes: max(1, workers))
            }
            return RunLimits(bytes: 16 << 20, blobs: 1 << 14, gap: 2 << 20, queued: workers, gathered: 1 << 16, packs: .max,
                             folders: folders)
        }
    }

    struct Job: Sendable {
        var sink: FileSink
        var location: BlobLocation
        var offset: Int
    }

    func enqueue(_ sink: FileSink, _ locations: [BlobLocation], _ jobs: BoundedQueue<[Job]>) {
        var offset = 0
        for location in locations {
            enqueue(Job(sink: sink, location: location, offset: offset), jobs)
            offset += Int(location.blob.rawLength)
        }
    }

    /// Adds a blob to those wanted from its pack; hands that pack's blobs to the workers when one
    /// read could not cover them all, and the largest gathering when too many files wait.
    func enqueue(_ job: Job, _ jobs: BoundedQueue<[Job]>) {
        let pack = job.location.pack
        let start = Int(job.location.blob.offset)
        let end = start + Int(job.location.blob.length)
        if let gathered = pending[pack] {
            if max(end, gathered.end) - min(start, gathered.start) > limits.bytes || gathered.jobs.count >= limits.blobs {
                flush(pack, jobs)
            }
        } else if pending.count >= limits.packs {
            flushPacks(jobs)
        }
        pending[pack, default: Gathering()].add(job, start: start, end: end)
        pendingBlobs += 1
        if pendingBlobs >= limits.gathered, let largest = pending.max(by: { $0.value.jobs.count < $1.value.jobs.count })?.key {
            flush(largest, jobs)
        }
    }

    /// Hands one pack's gathered blobs to the workers in offset order, as one read per stretch
    /// without a gap wider than `limits.gap` and no longer than `limits.bytes`.
    func flush(_ pack: BlobID, _ jobs: BoundedQueue<[Job]>) {
        guard let gathered = pending.removeValue(forKey: pack) else { return }
        pendingBlobs -= gathered.jobs.count
        let sorted = gathered.jobs.sorted { $0.location.blob.offset < $1.location.blob.offset }
        var read: [Job] = []
        var readStart = 0
        var readEnd = 0
        for job in sorted {
            let start = Int(job.location.blob.offset)
            let end = start + Int(job.location.blob.length)
            if !read.isEmpty && (start - readEnd > limits.gap || max(end, readEnd) - readStart > limits.bytes) {
                handOut(read, jobs)
                read = []
            }
            if read.isEmpty { readStart = start; readEnd = end }
            read.append(job)
            readEnd = max(readEnd, end)
        }
        if !read.isEmpty { handOut(read, jobs) }
    }

    func flushPacks(_ jobs: BoundedQueue<[Job]>) {
        for pack in Array(pending.keys) { flush(pack, jobs) }
    }

    /// Hands out everything gathered and held (the end of the walk, or folders to close).
    func flushAll(_ jobs: BoundedQueue<[Job]>) {
        flushPacks(jobs)
        releaseLanes(jobs)
    }

    /// A read for the workers: with lanes, held with its file's others and handed out in turn
    /// with another file's, once there is another file (or too many are held).
    func handOut(_ read: [Job], _ jobs: BoundedQueue<[Job]>) {
        guard limits.lanes > 1 else {
            _ = jobs.push(read)
            return
        }
        for released in lanes.add(read, key: ObjectIdentifier(read[0].sink)) { _ = jobs.push(released) }
    }

    func releaseLanes(_ jobs: BoundedQueue<[Job]>) {
        for released in lanes.drain() { _ = jobs.push(released) }
    }
}
