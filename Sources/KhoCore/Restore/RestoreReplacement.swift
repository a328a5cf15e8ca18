import Foundation
import KhoSupport
import Glibc

// --overwrite: an entry is written under a temporary name and renamed over the old one only when
// whole, so that a restore that fails leaves the old file; temporaries left are removed.
extension Restorer {
    /// A temporary name that becomes `final` when the entry written under it is complete. Listed
    /// in `Temporaries` until then, so that a restore that stops removes what it left half done.
    final class Replacement: @unchecked Sendable {
        let final: [UInt8]
        let temporary: [[UInt8]]
        private let registry: Temporaries

        init(final: [UInt8], temporary: [[UInt8]], registry: Temporaries) {
            self.final = final
            self.temporary = temporary
            self.registry = registry
            registry.add(self)
        }

        /// Renames the finished entry over the old one: the old name always holds a whole file.
        func commit(in folder: Int32, temporary name: [UInt8], path: String) throws {
            defer { done() }
            _ = try FileSystem.withCName(name) { from in
                try FileSystem.withCName(final) { to in
                    try Syscall.call("renameat", path) { renameat(folder, from, folder, to) }
                }
            }
        }

        func done() { registry.remove(self) }
    }

    /// Temporary entries of --overwrite not yet renamed, by their path below the target.
    final class Temporaries: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [ObjectIdentifier: [[UInt8]]] = [:]

        func add(_ entry: Replacement) { lock.lock(); entries[ObjectIdentifier(entry)] = entry.temporary; lock.unlock() }
        func remove(_ entry: Replacement) { lock.lock(); entries[ObjectIdentifier(entry)] = nil; lock.unlock() }

        /// Removes every temporary entry left: called when a restore stops half way.
        func discard(below root: Int32) {
            lock.lock()
            let left = Array(entries.values)
            entries.removeAll()
            lock.unlock()
            for components in left {
                // try?: cleaning up after the failure being reported; a folder that cannot be
                // opened keeps its `.kho-restore-*` entry, which the restore's error names no
                // worse than before.
                guard let name = components.last,
                      let folder = try? FileSystem.openDirectory(Array(components.dropLast()), below: root, path: "") else { continue }
                FileSystem.withCName(name) { _ = unlinkat(folder, $0, 0) }
                close(folder)
            }
        }
    }

    /// A name for an entry being written in place of another (--overwrite), unlikely to be used.
    static func temporaryName() throws -> [UInt8] {
        Array(".kho-restore-\(Hex.encode(try Random.bytes(8)))".utf8)
    }

    /// The name to create a non-folder entry under: its own, or with --overwrite over an existing
    /// entry, a temporary name that `replace` renames over it once the entry is complete. Nil
    /// (after a warning) when a folder is in the way: a folder is never removed.
    func nameToCreate(_ name: [UInt8], in fd: Int32, path: String) throws -> [UInt8]? {
        guard options.overwrite else { return name }
        let (info, code) = FileSystem.lstat(at: fd, name)
        guard let info else {
            if code == ENOENT { return name }
            throw KhoError.posix("fstatat", path, errno: code)
        }
        if info.st_mode & S_IFMT == S_IFDIR {
            warn("\(path): a folder of this name is in the target; it is not replaced by the snapshot's \(String(decoding: name, as: UTF8.self))")
            summary.errors += 1
            return nil
        }
        return try Restorer.temporaryName()
    }

    /// Renames `created` over `name` when they differ (see `nameToCreate`).
    func replace(_ name: [UInt8], with created: [UInt8], in fd: Int32, path: String) throws {
        guard created != name else { return }
        try FileSystem.withCName(created) { from in
            try FileSystem.withCName(name) { to in
                let (result, code) = Syscall.attempt { renameat(fd, from, fd, to) }
                if result != 0 {
                    _ = unlinkat(fd, from, 0)
                    throw KhoError.posix("renameat", path, errno: code)
                }
            }
        }
    }
}
