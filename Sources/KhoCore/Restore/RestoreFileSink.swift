import Foundation
import KhoSupport
import Glibc

// How a restored file is written: created by the first worker holding one of its blobs, filled at
// each blob's offset (holes left where the snapshot has zeros), closed with its metadata.
extension Restorer {
    /// A file filled by workers: created by the first worker to hold one of its blobs (unless the
    /// walker created it already, as it does for hard links), closed with its metadata when its
    /// last blob lands.
    final class FileSink: @unchecked Sendable {
        let node: Node
        let path: String
        let restoreOwners: Bool
        private let lock = NSLock()
        private var fd: Int32
        private var folder: Folder?
        private let name: [UInt8]
        private var createError: Error?
        private var remaining: Int
        private let blobs: Int
        private let created: Bool
        /// With --overwrite: the file is written under a temporary `name` and renamed to this one
        /// only when every blob landed, so that a restore that fails leaves the old file whole.
        private let replacing: Replacement?
        private var failed = false

        /// A file to open as `name` in `folder` when its first blob is written: to create, or
        /// already `created` by the walker (and closed: a waiting file holds no descriptor).
        init(name: [UInt8], in folder: Folder, created: Bool = false, replacing: Replacement? = nil, node: Node, path: String,
             blobs: Int, restoreOwners: Bool) {
            fd = -1
            self.created = created
            self.replacing = replacing
            self.name = name
            self.folder = folder
            self.node = node
            self.path = path
            self.restoreOwners = restoreOwners
            self.blobs = blobs
            remaining = blobs
        }

        /// The file's descriptor, creating the file on first use.
        func descriptor() throws -> Int32 {
            lock.lock()
            defer { lock.unlock() }
            if fd >= 0 { return fd }
            if let createError { throw createError }
            do {
                // The walker's files exist already; any other name must be new (O_EXCL).
                let flags = created ? O_WRONLY | O_NOFOLLOW | O_CLOEXEC : O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
                let opened = try FileSystem.withCName(name) { cname in
                    try Syscall.call("openat", path) { openat(folder!.fd, cname, flags, 0o600) }
                }
                if blobs > 1 {
                    // Sized first: its blobs land out of order from several workers, and writes
                    // inside the file's length do not move its end again and again. A one-blob
                    // file gets its length from its one write (see writeSkippingZeros).
                    let (result, code) = Syscall.attempt { ftruncate(opened, off_t(node.size)) }
                    if result != 0 { close(opened); throw KhoError.posix("ftruncate", path, errno: code) }
                }
                fd = opened
                return opened
            } catch {
                createError = error
                throw error
            }
        }

        /// One blob written (or, `failed`, not); after the last, the file gets its metadata, is
        /// synced and closed, and a replacement takes the old name. Returns a warning to show.
        func blobDone(failed blobFailed: Bool) throws -> String? {
            lock.lock()
            remaining -= 1
            if blobFailed { failed = true }
            let last = remaining == 0
            lock.unlock()
            guard last else { return nil }
            defer { folder = nil }
            if fd >= 0 {
                let opened = fd
                fd = -1
                defer { close(opened) }
                Restorer.applyMetadata(fd: opened, node: node, restoreOwners: restoreOwners)
                // A replacement must be on disk before it takes the old name, or a power cut could
                // leave an empty file where the old one was. New files are synced all at once at
                // the end (syncfs), which costs one call instead of one journal commit per file.
                if replacing != nil { try Syscall.call("fsync", path) { fsync(opened) } }
            }
            guard let replacing, let folder else { return nil }
            if failed {
                FileSystem.withCName(name) { _ = unlinkat(folder.fd, $0, 0) }
                replacing.done()
                return "\(path): the existing file is kept, as its replacement could not be restored whole"
            }
            try replacing.commit(in: folder.fd, temporary: name, path: path)
            return nil
        }
    }

    /// Writes `plain` at `offset`, leaving out the 4 KiB blocks (aligned to the file) that are all
    /// zero: the file was already extended to its full size, so they read as zero and stay holes.
    /// Skipping only whole zero chunks is not enough: a chunk of a sparse file is usually a few
    /// written blocks in megabytes of zeros.
    /// The file's last byte is always written, zero or not, so that the file gets its full length
    /// from the writes alone (no `ftruncate` per file: one metadata change less on every file).
    static func writeSkippingZeros(_ fd: Int32, _ plain: UnsafeRawBufferPointer, offset: Int, fileSize: Int, _ path: String) throws {
        let block = 4096
        var run: Int? = nil
        var i = 0
        while i < plain.count {
            let end = min(plain.count, i + block - (offset + i) % block)
            if isZero(UnsafeRawBufferPointer(rebasing: plain[i..<end])) {
                if let start = run {
                    try Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: plain[start..<i]), offset: offset + start, path)
                    run = nil
                }
            } else if run == nil {
                run = i
            }
            i = end
        }
        if let start = run {
            try Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: plain[start..<plain.count]), offset: offset + start, path)
        } else if !plain.isEmpty && offset + plain.count == fileSize {
            try Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: plain[(plain.count - 1)...]), offset: offset + plain.count - 1, path)
        }
    }

    static func isZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        let words = buffer.count / 8
        let base = buffer.baseAddress!
        for i in 0..<words where base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
        for i in (words * 8)..<buffer.count where buffer[i] != 0 { return false }
        return true
    }
}
