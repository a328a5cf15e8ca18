import Foundation
import KhoTestSupport
import Glibc
import Testing

/// `kho ls --json` output, as far as these tests read it.
struct LsOutput: Decodable {
    struct Entry: Decodable {
        var path: String
        var kind: String
        var size: UInt64
        var uid: UInt32
        var gid: UInt32
        var linkTarget: String?
    }
    var entries: [Entry]
}

/// `kho backup --json` output.
struct BackupOutput: Decodable {
    struct Summary: Decodable {
        var filesNew: Int
        var filesChanged: Int
        var filesUnchanged: Int
        var bytesRead: Int64
        var totalSize: Int64
        var bytesNewRaw: Int64
        var bytesAdded: Int64
        var warnings: Int
    }
    var snapshot: String
    var partial: Bool
    var summary: Summary
}

@Suite("round trip of files and folders")
struct RoundTripTests {
    @Test("an awkward tree comes back identical: content, kinds, modes, owners, mtimes, names, hard links, holes")
    func awkwardTreeRoundTrip() throws {
        try requireRoot()
        let sandbox = try Sandbox("roundtrip")
        let source = sandbox.path("src")
        let tree = AwkwardTree(root: source)
        try tree.build()
        let before = try Manifest.of(source)
        let sparseName = Array("sparse.img".utf8)
        try #require(before.entries[sparseName]?.size == Int64(tree.sparseSize))
        try #require(before.blocks[sparseName]! * 512 < Int64(tree.sparseSize / 8), "the source file system must keep holes")

        try sandbox.initRepository()
        let backup = try sandbox.kho("backup", source, "--json")
        try #require(backup.exitCode == 0, "\(backup)")
        let summary = try backup.decode(BackupOutput.self)
        #expect(!summary.partial)
        #expect(summary.summary.warnings == 0, "\(backup)")

        // The backup does not touch the source (times, content).
        #expect(try Manifest.of(source).differences(from: before).isEmpty)

        let target = sandbox.path("restored")
        let restore = try sandbox.kho("restore", "latest", "--target", target)
        try #require(restore.exitCode == 0, "\(restore)")
        let after = try Manifest.of(target + source)
        let differences = after.differences(from: before)
        #expect(differences.isEmpty, "restored tree differs from the source:\n\(differences.joined(separator: "\n"))")

        // Pieces the manifest compares, stated once more so that a failure says what broke.
        let nfc = Array(("names/" + AwkwardTree.nfc).utf8)
        let nfd = Array(("names/" + AwkwardTree.nfd).utf8)
        #expect(after.entries[nfc]?.kind == "file" && after.entries[nfd]?.kind == "file", "NFC and NFD names must be two files")
        #expect(after.entries[nfc]?.sha256 != after.entries[nfd]?.sha256)
        #expect(after.entries[Array("names/".utf8) + AwkwardTree.notUTF8]?.kind == "file", "the non-UTF-8 name must come back byte-exact")
        #expect(after.entries[Array("modes/setuid".utf8)]?.mode == 0o4755)
        #expect(after.entries[Array("modes/sticky".utf8)]?.mode == 0o1777)
        #expect(after.entries[Array("modes/private".utf8)]?.mode == 0o600)
        #expect(after.entries[Array("owned/folder/file".utf8)]?.uid == AwkwardTree.ownerUID && after.entries[Array("owned/folder/file".utf8)]?.gid == AwkwardTree.ownerGID)
        #expect(after.entries[Array("owned/link".utf8)]?.uid == AwkwardTree.ownerUID && after.entries[Array("owned/link".utf8)]?.gid == AwkwardTree.ownerGID)
        #expect(after.entries[Array("fifo".utf8)]?.kind == "fifo")
        #expect(after.entries[Array("null-device".utf8)]?.kind == "chardev")
        #expect(after.entries[Array("socket".utf8)]?.kind == "socket")
        #expect(after.entries[Array("links/dangling".utf8)]?.linkTarget == Array("does/not/exist".utf8))
        let longLeaf = after.entries.keys.first { $0.count > 4096 && $0.suffix(8) == Array("leaf.txt".utf8) }
        #expect(longLeaf != nil, "the file below a path longer than PATH_MAX must come back")
        let hard = [Array("hard/a".utf8), Array("hard/b".utf8), Array("dir1/hard-c".utf8)]
        #expect(Set(hard.compactMap { after.inodes[$0] }).count == 1, "hard links must be restored as one inode")
        #expect(after.entries[Array("hard/a".utf8)]?.links == 3)

        // The sparse file keeps its content and its holes.
        #expect(after.entries[sparseName]?.sha256 == before.entries[sparseName]?.sha256)
        let restoredBlocks = after.blocks[sparseName] ?? .max
        #expect(restoredBlocks * 512 < Int64(tree.sparseSize / 8),
                "the restored sparse file uses \(restoredBlocks * 512) bytes on disk for \(tree.sparseSize) bytes of mostly holes")

        // `kho ls --json` lists every entry with its kind, owner, link target and (for files) size.
        let ls = try sandbox.kho("ls", "latest", "--json")
        try #require(ls.exitCode == 0, "\(ls)")
        let listing = try ls.decode(LsOutput.self)
        var listed: [[UInt8]: String] = [:]
        let prefix = Array(source.utf8)
        for entry in listing.entries {
            let bytes = Array(entry.path.utf8)
            if bytes.starts(with: prefix) {
                listed[bytes] = "\(entry.kind) \(entry.kind == "file" ? entry.size : 0) \(entry.uid):\(entry.gid) -> \(entry.linkTarget ?? "")"
            }
        }
        var expected: [[UInt8]: String] = [:]
        for (path, entry) in before.entries {
            // kho prints names as UTF-8 with invalid bytes replaced: do the same to the expectation.
            let full = path.isEmpty ? prefix : prefix + [0x2f] + path
            let shown = Array(String(decoding: full, as: UTF8.self).utf8)
            expected[shown] = "\(entry.kind) \(entry.kind == "file" ? entry.size : 0) \(entry.uid):\(entry.gid) -> \(entry.linkTarget.map { String(decoding: $0, as: UTF8.self) } ?? "")"
        }
        let missing = expected.filter { listed[$0.key] != $0.value }.map { "\(Manifest.show($0.key)): expected \($0.value), listed \(listed[$0.key] ?? "nothing")" }
        let extra = listed.keys.filter { expected[$0] == nil }.map { "unexpected \(Manifest.show($0))" }
        #expect(missing.isEmpty && extra.isEmpty, "kho ls --json disagrees with the source:\n\((missing + extra).sorted().joined(separator: "\n"))")
        #expect(listing.entries.contains { Array($0.path.utf8) == prefix + Array("/names/".utf8) + Array(AwkwardTree.nfd.utf8) })
    }

    @Test("a path below a symlinked folder (like /lib → usr/lib) is saved under the path given; a symlink given itself stays a symlink")
    func pathBelowSymlinkedFolder() throws {
        let sandbox = try Sandbox("via-link")
        try sandbox.initRepository()
        try makeDirectories(sandbox.path("real/inner"))
        try writeFile(sandbox.path("real/inner/file.txt"), Array("through a link\n".utf8))
        try check("symlink", "via") { symlink("real", sandbox.path("via")) }
        let given = sandbox.path("via/inner/file.txt")

        let backup = try sandbox.kho("backup", given, "--json")
        try #require(backup.exitCode == 0, "\(backup)")
        #expect(try backup.decode(BackupOutput.self).summary.filesNew == 1, "the file below the symlinked folder must be saved: \(backup)")
        let dump = try sandbox.kho("dump", "latest", given)
        #expect(dump.exitCode == 0 && dump.out == "through a link\n", "\(dump)")
        let target = sandbox.path("restored")
        try sandbox.ok("restore", "latest", "--target", target)
        #expect(try readFile(target + given) == Array("through a link\n".utf8))

        let link = try sandbox.kho("backup", sandbox.path("via"), "--json")
        try #require(link.exitCode == 0, "\(link)")
        let ls = try sandbox.kho("ls", "latest", "--json")
        let entry = try ls.decode(LsOutput.self).entries.first { $0.path == sandbox.path("via") }
        #expect(entry?.kind == "symlink" && entry?.linkTarget == "real", "\(ls)")
    }

    @Test("a second backup of an unchanged tree reads nothing and adds almost nothing")
    func unchangedTreeSecondBackup() throws {
        try requireRoot()
        let sandbox = try Sandbox("unchanged")
        let source = sandbox.path("src")
        var tree = AwkwardTree(root: source)
        tree.sparseSize = 8 << 20
        try tree.build()
        try makeDirectories(source + "/bulk")
        for i in 0..<4 { try writeFile(source + "/bulk/part-\(i)", randomBytes(1 << 20)) }
        let files = try Manifest.of(source).entries.values.filter { $0.kind == "file" }.count

        try sandbox.initRepository()
        let first = try sandbox.kho("backup", source, "--json")
        try #require(first.exitCode == 0, "\(first)")
        let one = try first.decode(BackupOutput.self).summary
        #expect(one.filesNew == files, "\(first)")
        #expect(one.bytesRead > 4 << 20)

        let second = try sandbox.kho("backup", source, "--json")
        try #require(second.exitCode == 0, "\(second)")
        let two = try second.decode(BackupOutput.self).summary
        #expect(two.filesNew == 0, "\(second)")
        #expect(two.filesChanged == 0, "\(second)")
        #expect(two.filesUnchanged == files, "\(second)")
        #expect(two.bytesRead == 0, "\(second)")
        #expect(two.bytesAdded < 64 << 10, "a backup of an unchanged tree added \(two.bytesAdded) bytes")
        #expect(two.totalSize == one.totalSize)
        #expect(try sandbox.snapshots().count == 2)
    }
}

@Suite("backup options and restore targets")
struct BackupOptionTests {
    @Test("a file rewritten in place with the same size and mtime is still seen as changed (ctime)")
    func changedFileWithSameSizeAndMtime() throws {
        let sandbox = try Sandbox("changed")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        let file = source + "/register.db"
        try writeFile(file, dumpText(300_000, seed: 1))
        try writeFile(source + "/other.txt", Array("unchanged\n".utf8))
        try sandbox.ok("backup", source)

        var before = stat()
        try check("stat", file) { stat(file, &before) }
        let edited = dumpText(300_000, seed: 2)
        try writeFile(file, edited)
        var times = [before.st_atim, before.st_mtim]
        try check("utimensat", file) { utimensat(AT_FDCWD, file, &times, 0) }
        var after = stat()
        try check("stat", file) { stat(file, &after) }
        try #require(after.st_size == before.st_size && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)

        let backup = try sandbox.kho("backup", source, "--json")
        try #require(backup.exitCode == 0, "\(backup)")
        let summary = try backup.decode(BackupOutput.self).summary
        #expect(summary.filesChanged == 1 && summary.filesUnchanged == 1, "\(backup)")
        let dump = try sandbox.kho("dump", "latest", file)
        #expect(sha256(dump.stdout) == sha256(edited), "the new content must be stored")
    }

    @Test("--exclude skips files and folders; --tag and --host are recorded and filter snapshots")
    func excludeTagsHost() throws {
        let sandbox = try Sandbox("options")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source + "/cache/deep")
        try makeDirectories(source + "/sub")
        try writeFile(source + "/keep.txt", Array("keep\n".utf8))
        try writeFile(source + "/sub/keep too.txt", Array("keep\n".utf8))
        try writeFile(source + "/skip.tmp", Array("skip\n".utf8))
        try writeFile(source + "/sub/skip.tmp", Array("skip\n".utf8))
        try writeFile(source + "/cache/deep/x", Array("skip\n".utf8))
        let backup = try sandbox.kho("backup", source, "--exclude", "*.tmp", "--exclude", "cache",
                                     "--tag", "daily", "--tag", "ho-tich", "--host", "agency-7", "--json")
        try #require(backup.exitCode == 0, "\(backup)")
        let ls = try sandbox.kho("ls", "latest", "--json")
        let paths = Set(try ls.decode(LsOutput.self).entries.map(\.path))
        #expect(paths.contains(source + "/keep.txt") && paths.contains(source + "/sub/keep too.txt"), "\(ls)")
        #expect(!paths.contains { $0.hasSuffix(".tmp") || $0.contains("/cache") }, "excluded entries were saved: \(paths.sorted())")

        let snapshot = try #require(try sandbox.snapshots().first)
        #expect(snapshot["hostname"] as? String == "agency-7")
        #expect(snapshot["tags"] as? [String] == ["daily", "ho-tich"])
        let tagged = try sandbox.kho("snapshots", "--tag", "daily", "--json")
        #expect((try tagged.json() as? [Any])?.count == 1)
        let otherHost = try sandbox.kho("snapshots", "--host", "elsewhere", "--json")
        #expect((try otherHost.json() as? [Any])?.count == 0)
    }

    @Test("restore never writes into a folder that is not empty, and a file target is refused")
    func restoreRefusesNonEmptyTarget() throws {
        let sandbox = try Sandbox("target")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        try writeFile(source + "/data.txt", Array("from the backup\n".utf8))
        try sandbox.ok("backup", source)

        let live = sandbox.path("live")
        try makeDirectories(live + source)
        try writeFile(live + source + "/data.txt", Array("live data\n".utf8))
        let refused = try sandbox.kho("restore", "latest", "--target", live)
        #expect(refused.exitCode != 0 && refused.exitCode != nil, "\(refused)")
        #expect(refused.err.contains("not empty"), "\(refused)")
        #expect(try readFile(live + source + "/data.txt") == Array("live data\n".utf8), "the live file must not be touched")

        let file = sandbox.path("a-file")
        try writeFile(file, Array("x".utf8))
        let notFolder = try sandbox.kho("restore", "latest", "--target", file)
        #expect(notFolder.exitCode != 0 && notFolder.exitCode != nil, "\(notFolder)")
        #expect(try readFile(file) == Array("x".utf8))

        // --overwrite is the explicit way.
        let overwrite = try sandbox.kho("restore", "latest", "--target", live, "--overwrite")
        #expect(overwrite.exitCode == 0, "\(overwrite)")
        #expect(try readFile(live + source + "/data.txt") == Array("from the backup\n".utf8))
    }
}
