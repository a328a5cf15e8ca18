import Foundation
import KhoSupport
import Glibc

// Folders of a restore: the target opened safely, folders made without following symlinks, kept
// open within a budget while their files wait, and their metadata set last (children first).
extension Restorer {
    /// A folder the walker created, kept open while files in it wait to be created by workers;
    /// closed when the last of them lets go.
    final class Folder: @unchecked Sendable {
        let fd: Int32
        private let budget: FolderBudget

        init(fd: Int32, budget: FolderBudget) {
            self.fd = fd
            self.budget = budget
            budget.opened()
        }

        deinit {
            close(fd)
            budget.closed()
        }
    }

    /// Counts open `Folder`s so that the walker can wait for workers to close some.
    final class FolderBudget: @unchecked Sendable {
        private let condition = NSCondition()
        private var open = 0

        func opened() { condition.lock(); open += 1; condition.unlock() }

        func closed() {
            condition.lock()
            open -= 1
            condition.broadcast()
            condition.unlock()
        }

        var count: Int { condition.lock(); defer { condition.unlock() }; return open }

        func wait(below limit: Int) {
            condition.lock()
            while open >= limit { condition.wait() }
            condition.unlock()
        }
    }

    static func applyMetadata(fd: Int32, node: Node, restoreOwners: Bool) {
        if restoreOwners { _ = fchown(fd, node.uid, node.gid) }
        _ = fchmod(fd, mode_t(node.mode))
        var times = [timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
                     timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds))]
        _ = futimens(fd, &times)
    }

    /// Sets every created folder's metadata, children before parents, opening each folder once
    /// from its parent (the list is in creation order, which is parent-first). Then the target's
    /// filesystem is synced as a whole (syncfs): every restored file's data and every folder's
    /// entries are on disk before the restore is reported done, so it survives a power cut.
    /// One syncfs instead of an fsync per file and folder: 46,000 files meant 46,000 journal
    /// commits (docs/BENCHMARKS.md).
    func applyDirectoryMetadata(rootFD: Int32, target: String) throws {
        var stack: [(components: [[UInt8]], fd: Int32, node: Node)] = []
        func popOne() {
            let top = stack.removeLast()
            if top.fd >= 0 {
                Restorer.applyMetadata(fd: top.fd, node: top.node, restoreOwners: options.restoreOwners)
                close(top.fd)
            }
        }
        for (components, node) in createdDirectories {
            while let top = stack.last, top.components != Array(components.dropLast()) { popOne() }
            let parentFD = stack.last?.fd ?? rootFD
            var fd: Int32 = -1
            if parentFD >= 0, let name = components.last {
                fd = FileSystem.withCName(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            stack.append((components, fd, node))
        }
        while !stack.isEmpty { popOne() }
        try Syscall.call("syncfs", target) { FileSystem.syncFilesystem(rootFD) }
    }

    /// Opens the restore target, creating it (and syncing the parents of what was created) if
    /// missing. The target is held by this descriptor from here on and everything is created
    /// relative to it, so that a symlink put in its place or inside it later is never followed.
    func openTarget(_ target: String) throws -> Int32 {
        // A folder on the way that another user can change (a symlink of theirs in /tmp, a
        // folder they can write) could send the restore, as root, anywhere.
        if let problem = FileSystem.trustProblem(target, includingItself: false) {
            throw KhoError(.usage, "The restore target \(target) is not safe to write as \(geteuid() == 0 ? "root" : "this user"): \(problem), or restore elsewhere.")
        }
        var info = Glibc.stat()
        if lstat(target, &info) != 0 {
            guard errno == ENOENT else { throw KhoError.posix("stat", target, errno: errno) }
            try FileSystem.makeFolders(target, mode: 0o700)
        }
        let (fd, code) = Syscall.attempt { open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else {
            // With O_DIRECTORY, a symlink fails as ENOTDIR: lstat tells the two apart.
            if code == ELOOP || (code == ENOTDIR && lstat(target, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK) {
                throw KhoError(.usage, "The restore target \(target) is a symbolic link: name the folder itself, so that nobody can point the restore elsewhere.")
            }
            if code == ENOTDIR {
                throw KhoError(.usage, "The restore target \(target) exists and is not a folder: choose a new or empty folder.")
            }
            throw KhoError.posix("open", target, errno: code)
        }
        do {
            guard fstat(fd, &info) == 0 else { throw KhoError.posix("fstat", target, errno: errno) }
            if info.st_uid != geteuid() && info.st_uid != 0 {
                throw KhoError(.usage, "The restore target \(target) belongs to user \(info.st_uid), who could move what kho writes there: restore into a new folder, or one of your own.")
            }
            if !options.overwrite, !(try FileSystem.entries(of: fd, path: target)).isEmpty {
                throw KhoError(.usage, "The restore target \(target) is not empty: choose a new or empty folder, or pass --overwrite to replace what is there.")
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Opens the folder `name` in `fd`, creating it if missing. A symlink or file of that name
    /// (only possible with --overwrite) is never followed: it is replaced by a new folder.
    func makeDirectory(_ name: [UInt8], in fd: Int32, path: String) throws -> Int32 {
        try FileSystem.withCName(name) { cname in
            let (made, code) = Syscall.attempt { mkdirat(fd, cname, 0o700) }
            if made != 0 && code != EEXIST { throw KhoError.posix("mkdirat", path, errno: code) }
            let (opened, openCode) = Syscall.attempt { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if opened >= 0 { return opened }
            guard made != 0, options.overwrite, openCode == ELOOP || openCode == ENOTDIR else {
                throw KhoError.posix("openat", path, errno: openCode)
            }
            // Swapped in one step, then the old entry removed: the name is never missing.
            let temporary = try Restorer.temporaryName()
            try FileSystem.withCName(temporary) { temp in
                try Syscall.call("mkdirat", path) { mkdirat(fd, temp, 0o700) }
                let (swapped, swapCode) = Syscall.attempt { FileSystem.renameat2(fd, temp, fd, cname, FileSystem.renameExchange) }
                if swapped != 0 {
                    _ = unlinkat(fd, temp, AT_REMOVEDIR)
                    throw KhoError.posix("renameat2", path, errno: swapCode)
                }
                _ = unlinkat(fd, temp, 0)
            }
            return try Syscall.call("openat", path) { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
    }
}
