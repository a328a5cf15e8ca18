import Foundation
import KhoTestSupport
import Glibc
import KhoCore
import KhoSupport
import KhoStorage
import Testing

// Attacks on where a restore writes: names that are paths, symlinks in or as the target, an
// --overwrite that fails half way, and whether what a restore wrote reaches the disk.

/// Writes a snapshot into the sandbox's repository as a key holder could, with any tree at all:
/// `build` saves blobs and returns the root tree's entries.
func plantSnapshot(_ sandbox: Sandbox, paths: [String] = ["/planted"],
                   _ build: (BlobSaver) throws -> [Node]) throws -> String {
    let repository = try Repository.open(storage: LocalStorage(path: sandbox.repo), password: Array(sandbox.password.utf8))
    let index = try repository.loadIndex()
    let saver = try BlobSaver(repository: repository, index: index)
    let root = try saver.save(Tree(nodes: try build(saver)).encoded(), kind: .tree)
    _ = try saver.finish()
    var snapshot = Snapshot(time: Date(), tree: root, paths: paths, hostname: "planted", username: "root", tags: [],
                            parent: nil, source: SnapshotSource(kind: "files"), partial: false, summary: nil, manifest: nil)
    snapshot.keyID = repository.keyID
    return try repository.saveSnapshot(snapshot).hex
}

func fileNode(_ name: [UInt8], _ content: [UInt8], saver: BlobSaver) throws -> Node {
    var node = Node(name: name, kind: .file)
    node.mode = 0o644
    node.size = UInt64(content.count)
    node.content = [try saver.save(content, kind: .data)]
    return node
}

func folderNode(_ name: [UInt8], _ nodes: [Node], saver: BlobSaver) throws -> Node {
    var node = Node(name: name, kind: .directory)
    node.mode = 0o755
    node.subtree = try saver.save(Tree(nodes: nodes).encoded(), kind: .tree)
    return node
}

/// Every name below `path`, relative to it (folders too), walked with `find` so that nothing is missed.
func namesBelow(_ path: String) -> [String] {
    guard let names = try? FileManager.default.subpathsOfDirectory(atPath: path) else { return [] }
    return names.sorted()
}

@Suite("restore confinement")
struct RestoreConfinementTests {
    @Test("a stream or source name that is a path (`..`, `../x`, empty) is refused at backup: nothing is stored")
    func pathNamesRefusedAtBackup() throws {
        let sandbox = try Sandbox("names-backup")
        try sandbox.initRepository()
        for name in ["..", "."] {
            let backup = try sandbox.kho("backup", "--command", "echo secret", "--stdin-name", name)
            #expect(backup.exitCode == 2, "\(backup)")
            #expect(backup.err.contains("not a plain file name"), "\(backup)")
        }
        // A policy's command source is stored under the source's name.
        let policies = sandbox.path("policies")
        try makeDirectories(policies)
        chmod(policies, 0o755)
        let policy = try commandPolicy(sandbox, name: "escape", sourceName: "../escaped", command: "echo secret")
        try writeFile(policies + "/escape.yaml", Array(policy.utf8), mode: 0o600)
        let run = try sandbox.kho(["run", "--policies", policies, "--state-dir", sandbox.path("state")], env: ["KHO_PASSWORD": nil])
        #expect(run.exitCode != 0, "\(run)")
        #expect(run.all.contains("not a plain file name"), "\(run)")
        #expect(try sandbox.snapshots().isEmpty, "no snapshot may hold a name that is a path")
    }

    @Test("a tree with an entry named `..`, `.`, `a/b`, `../x` or with a NUL is refused at restore: nothing lands outside the target")
    func craftedTreeNamesRefusedAtRestore() throws {
        let sandbox = try Sandbox("names-restore")
        try sandbox.initRepository()
        let crafted: [(String, (BlobSaver) throws -> [Node])] = [
            ("dot-dot folder", { s in [try folderNode(Array("..".utf8), [try fileNode(Array("escaped".utf8), Array("pwned".utf8), saver: s)], saver: s)] }),
            ("dot-dot-slash file", { s in [try fileNode(Array("../escaped".utf8), Array("pwned".utf8), saver: s)] }),
            ("slash inside", { s in [try fileNode(Array("a/../../escaped".utf8), Array("pwned".utf8), saver: s)] }),
            ("dot folder", { s in [try folderNode(Array(".".utf8), [try fileNode(Array("escaped".utf8), Array("pwned".utf8), saver: s)], saver: s)] }),
            ("empty name", { s in [try fileNode([], Array("pwned".utf8), saver: s)] }),
            ("NUL", { s in [try fileNode(Array("escaped".utf8) + [0] + Array("x".utf8), Array("pwned".utf8), saver: s)] }),
            ("deep dot-dot", { s in
                [try folderNode(Array("ok".utf8), [try folderNode(Array("..".utf8), [try folderNode(Array("..".utf8),
                    [try fileNode(Array("escaped".utf8), Array("pwned".utf8), saver: s)], saver: s)], saver: s)], saver: s)]
            }),
        ]
        for (n, (label, build)) in crafted.enumerated() {
            let id = try plantSnapshot(sandbox, build)
            let outside = sandbox.path("out-\(n)")
            try makeDirectories(outside)
            let target = outside + "/target"
            let restore = try sandbox.kho("restore", String(id.prefix(12)), "--target", target)
            #expect(restore.exitCode == 12, "\(label): \(restore)")
            #expect(restore.err.contains("not a plain file name"), "\(label): \(restore)")
            #expect(namesBelow(outside).allSatisfy { $0 == "target" || $0.hasPrefix("target/") }, "\(label): \(namesBelow(outside))")
            #expect(access(sandbox.dir + "/escaped", F_OK) != 0, "\(label) escaped into the sandbox")
            #expect(!namesBelow(sandbox.dir).contains { $0.hasSuffix("escaped") }, "\(label): \(namesBelow(sandbox.dir))")
            // `kho ls` reads the same tree and refuses it too.
            let ls = try sandbox.kho("ls", String(id.prefix(12)))
            #expect(ls.exitCode == 12, "\(label): \(ls)")
        }
    }

    @Test("a restore target that is a symlink is refused: the folder it points to stays empty")
    func symlinkTargetRefused() throws {
        let sandbox = try Sandbox("target-link")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a.txt", Array("hello".utf8))
        try sandbox.ok("backup", data)
        let elsewhere = sandbox.path("elsewhere")
        try makeDirectories(elsewhere)
        let link = sandbox.path("restore-here")
        try #require(symlink(elsewhere, link) == 0)
        let restore = try sandbox.kho("restore", "latest", "--target", link)
        #expect(restore.exitCode == 2, "\(restore)")
        #expect(restore.err.contains("symbolic link"), "\(restore)")
        #expect(namesBelow(elsewhere).isEmpty, "\(namesBelow(elsewhere))")

        // A symlink on the way that another user owns: they choose where it leads.
        let hop = sandbox.path("hop")
        try #require(symlink(elsewhere, hop) == 0)
        try #require(lchown(hop, 12345, 12345) == 0)
        let viaHop = try sandbox.kho("restore", "latest", "--target", hop + "/new")
        #expect(viaHop.exitCode == 2 && viaHop.err.contains("belongs to user 12345"), "\(viaHop)")
        #expect(namesBelow(elsewhere).isEmpty, "\(namesBelow(elsewhere))")

        // A folder on the way that every user can write (and not sticky): they can swap the target.
        let open = sandbox.path("open")
        try makeDirectories(open)
        chmod(open, 0o777)
        let below = try sandbox.kho("restore", "latest", "--target", open + "/target")
        #expect(below.exitCode == 2 && below.err.contains("every user"), "\(below)")
        #expect(namesBelow(open).isEmpty, "\(namesBelow(open))")
    }

    @Test("--overwrite into a target holding a symlink `sub -> outside`: the symlink is replaced, nothing is written outside")
    func symlinkInsideTargetNotFollowed() throws {
        let sandbox = try Sandbox("inner-link")
        try sandbox.initRepository()
        // The planted snapshot puts `sub/file.txt` and `f.txt` at the root of the restore.
        let id = try plantSnapshot(sandbox) { s in
            [try folderNode(Array("sub".utf8), [try fileNode(Array("file.txt".utf8), Array("restored".utf8), saver: s)], saver: s),
             try fileNode(Array("f.txt".utf8), Array("restored".utf8), saver: s)]
        }
        let outside = sandbox.path("outside")
        try makeDirectories(outside)
        try writeFile(outside + "/victim", Array("untouched".utf8))
        let target = sandbox.path("target")
        try makeDirectories(target)
        try #require(symlink(outside, target + "/sub") == 0)
        try #require(symlink(outside + "/victim", target + "/f.txt") == 0)
        let restore = try sandbox.kho("restore", String(id.prefix(12)), "--target", target, "--overwrite")
        #expect(restore.exitCode == 0, "\(restore)")
        #expect(namesBelow(outside) == ["victim"], "\(namesBelow(outside))")
        #expect(try readFile(outside + "/victim") == Array("untouched".utf8))
        var info = stat()
        #expect(lstat(target + "/sub", &info) == 0 && info.st_mode & S_IFMT == S_IFDIR, "sub is a real folder now")
        #expect((try? readFile(target + "/sub/file.txt")) == Array("restored".utf8))
        #expect(lstat(target + "/f.txt", &info) == 0 && info.st_mode & S_IFMT == S_IFREG, "f.txt is a real file now")
        #expect((try? readFile(target + "/f.txt")) == Array("restored".utf8))

        // A dump written with --to-file --overwrite over a planted symlink replaces the link.
        let dumpFile = sandbox.path("dump")
        try writeFile(dumpFile, Array("dump bytes".utf8))
        try sandbox.ok("backup", "--stdin", "--stdin-name", "db.sql", input: .file(dumpFile))
        let link = sandbox.path("restored.sql")
        try #require(symlink(outside + "/victim", link) == 0)
        let toFile = try sandbox.kho("restore", "latest", "--to-file", link, "--overwrite", "--yes")
        #expect(toFile.exitCode == 0, "\(toFile)")
        #expect(try readFile(outside + "/victim") == Array("untouched".utf8), "the dump went through the symlink")
        #expect(lstat(link, &info) == 0 && info.st_mode & S_IFMT == S_IFREG && info.st_mode & 0o777 == 0o600)
        #expect((try? readFile(link)) == Array("dump bytes".utf8))
    }

    @Test("--overwrite that fails half way (a damaged pack) leaves every old file whole and no temporary file")
    func overwriteFailingHalfWayKeepsOldFiles() throws {
        let sandbox = try Sandbox("overwrite-fail")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data)
        let names = ["a.bin", "b.bin", "c.bin"]
        for name in names { try writeFile(data + "/" + name, randomBytes(300_000)) }
        try sandbox.ok("backup", data)
        let target = sandbox.path("target")
        try sandbox.ok("restore", "latest", "--target", target)
        // What the target holds before the failed restore.
        for name in names { try writeFile(target + data + "/" + name, Array("old \(name)".utf8)) }
        // Damage every data blob: flip a byte every 4 KiB of the largest pack (the data pack).
        let packs = try sandbox.repositoryFiles("data")
        let (pack, size) = try #require(packs.max { $0.value < $1.value })
        let fd = try check("open", pack) { open(pack, O_RDWR | O_CLOEXEC) }
        for offset in stride(from: 100, to: size, by: 4096) {
            var byte: UInt8 = 0
            try check("pread", pack) { pread(fd, &byte, 1, off_t(offset)) }
            byte ^= 0x5a
            try check("pwrite", pack) { pwrite(fd, &byte, 1, off_t(offset)) }
        }
        close(fd)
        let restore = try sandbox.kho("restore", "latest", "--target", target, "--overwrite")
        #expect(restore.exitCode == 12, "\(restore)")
        for name in names {
            #expect((try? readFile(target + data + "/" + name)) == Array("old \(name)".utf8), "\(name) was not kept: \(restore)")
        }
        #expect(!namesBelow(target).contains { $0.contains(".kho-restore-") }, "\(namesBelow(target))")
    }

    @Test("a restore is on disk before it says done: the target's filesystem is synced after the last write, and a replaced file before its rename (seen with strace)",
          .enabled(if: access("/usr/bin/strace", X_OK) == 0, "strace is not installed"))
    func restoredFilesAreSynced() throws {
        let sandbox = try Sandbox("restore-fsync")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data + "/sub/deeper")
        try writeFile(data + "/a.txt", Array("a".utf8))
        try writeFile(data + "/sub/b.bin", randomBytes(200_000))
        try writeFile(data + "/sub/deeper/empty", [])
        try sandbox.ok("backup", data)
        let target = sandbox.path("target")
        func traced(_ arguments: [String]) throws -> [String] {
            let log = sandbox.path("strace-\(arguments.count).log")
            let result = try Child.spawn("/usr/bin/strace", ["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,syncfs,pwrite64,write,renameat,renameat2", "-o", log,
                                                             Harness.binary] + arguments,
                                         environment: sandbox.environment(), scratch: sandbox.dir).wait()
            try #require(result.exitCode == 0, "\(result)")
            return String(decoding: try readFile(log), as: UTF8.self).split(separator: "\n").map(String.init)
        }
        // A fresh restore: one syncfs of the target, after the last write of a restored file.
        let fresh = try traced(["restore", "latest", "--target", target])
        let sync = try #require(fresh.lastIndex { $0.contains("syncfs(") && $0.contains("<\(target)>") && $0.hasSuffix("= 0") },
                                "no syncfs of the target: \(fresh.filter { $0.contains("sync") })")
        let lastWrite = fresh.lastIndex { ($0.contains("pwrite64(") || $0.contains(" write(")) && $0.contains("<\(target)/") }
        #expect(lastWrite.map { $0 < sync } ?? true, "a restored file was written after the sync")

        // --overwrite: each replacement is fsynced before it is renamed over the old file.
        let again = try traced(["restore", "latest", "--target", target, "--overwrite"])
        for (i, line) in again.enumerated() where line.contains("rename") && line.contains("b.bin") {
            let fsynced = again[..<i].contains { $0.contains("fsync(") && $0.contains("kho-restore") && $0.hasSuffix("= 0") }
            #expect(fsynced, "b.bin was renamed into place before its data was synced: \(again[..<i].suffix(5))")
        }
        #expect(again.contains { $0.contains("syncfs(") && $0.hasSuffix("= 0") })
    }
}
