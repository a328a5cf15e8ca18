import Foundation
import KhoTestSupport
import Glibc
import Testing

/// A repository with two snapshots of one folder: the first holds `other.txt`, the second adds
/// `damaged.bin`, whose data therefore lands in packs of its own (1 MiB packs, 64 KiB chunks).
struct TwoSnapshotRepository {
    let sandbox: Sandbox
    let source: String
    let other: [UInt8]
    let damaged: [UInt8]
    var firstSnapshot = ""
    var secondSnapshot = ""
    /// Packs written by the second backup (path → size): damaged.bin's data and the new trees.
    var newPacks: [String: Int] = [:]

    init(_ label: String) throws {
        sandbox = try Sandbox(label)
        source = sandbox.path("src")
        other = randomBytes(3 << 20 + 777)
        damaged = randomBytes(3 << 20 + 555)
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "65536")
        try makeDirectories(source)
        try writeFile(source + "/other.txt", other)
        firstSnapshot = try TwoSnapshotRepository.backup(sandbox, source)
        let before = try sandbox.repositoryFiles("data")
        try writeFile(source + "/damaged.bin", damaged)
        secondSnapshot = try TwoSnapshotRepository.backup(sandbox, source)
        newPacks = try sandbox.repositoryFiles("data").filter { before[$0.key] == nil }
        try #require(newPacks.count >= 3, "damaged.bin should fill several 1 MiB packs: \(newPacks)")
        let check = try sandbox.kho("check", "--read-data")
        try #require(check.exitCode == 0, "the fresh repository must check clean: \(check)")
    }

    private static func backup(_ sandbox: Sandbox, _ source: String) throws -> String {
        let result = try sandbox.kho("backup", source, "--json")
        try #require(result.exitCode == 0, "\(result)")
        return try result.decode(BackupOutput.self).snapshot
    }

    /// The biggest pack of the second backup: kho keeps trees in packs of their own, so the
    /// biggest new pack holds only damaged.bin's data.
    var victimPack: (path: String, size: Int) {
        let biggest = newPacks.keys.max { newPacks[$0]! < newPacks[$1]! }!
        return (biggest, newPacks[biggest]!)
    }

    static func name(_ path: String) -> String { String(path.split(separator: "/").last!) }

    /// `kho check --read-data` must fail with 12 and trace the damage to damaged.bin in the second
    /// snapshot only.
    @discardableResult
    func expectDamageTraced(pack: String?, sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 12, "\(check)", sourceLocation: sourceLocation)
        if let pack {
            #expect(check.out.contains(String(TwoSnapshotRepository.name(pack).prefix(8))), "check must name the damaged pack: \(check)",
                    sourceLocation: sourceLocation)
        }
        let affected = check.out.split(separator: "\n").filter { $0.contains("snapshot ") && $0.contains(": /") }
        #expect(affected.contains { $0.contains(secondSnapshot.prefix(8)) && $0.hasSuffix(source + "/damaged.bin") },
                "check must name the affected snapshot and file: \(check)", sourceLocation: sourceLocation)
        #expect(!affected.contains { $0.contains("other.txt") }, "other.txt is not affected: \(check)", sourceLocation: sourceLocation)
        #expect(!affected.contains { $0.contains(firstSnapshot.prefix(8)) }, "the first snapshot is not affected: \(check)",
                sourceLocation: sourceLocation)

        // The JSON report says the same.
        let json = try sandbox.kho("check", "--read-data", "--json")
        #expect(json.exitCode == 12, "\(json)", sourceLocation: sourceLocation)
        let report = try #require(try json.json() as? [String: Any], sourceLocation: sourceLocation)
        let list = (report["affected"] as? [[String: Any]]) ?? []
        #expect(list.contains { ($0["snapshot"] as? String) == secondSnapshot && ($0["path"] as? String) == source + "/damaged.bin" },
                "\(json)", sourceLocation: sourceLocation)
        if let pack {
            #expect(((report["damagedPacks"] as? [String]) ?? []).contains(TwoSnapshotRepository.name(pack)), "\(json)",
                    sourceLocation: sourceLocation)
        }
        return check
    }

    /// Restoring only other.txt works and gives the right bytes.
    func expectOtherFileRestores(from snapshot: String = "latest", sourceLocation: SourceLocation = #_sourceLocation) throws {
        let target = sandbox.path("restore-other-\(Hex6.next())")
        let restore = try sandbox.kho("restore", snapshot, "--target", target, "--include", "*/other.txt")
        #expect(restore.exitCode == 0, "\(restore)", sourceLocation: sourceLocation)
        let restored = try? readFile(target + source + "/other.txt")
        #expect(restored.map(sha256) == sha256(other), "other.txt must be restored intact", sourceLocation: sourceLocation)
        #expect(access(target + source + "/damaged.bin", F_OK) != 0, "--include must restore only other.txt",
                sourceLocation: sourceLocation)
    }

    /// A full restore reports the damage with exit 12 and still restores other.txt.
    func expectFullRestoreReportsDamage(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let target = sandbox.path("restore-all-\(Hex6.next())")
        let restore = try sandbox.kho("restore", "latest", "--target", target)
        #expect(restore.exitCode == 12, "\(restore)", sourceLocation: sourceLocation)
        #expect(restore.err.contains("damaged.bin"), "the restore must say which file is damaged: \(restore)", sourceLocation: sourceLocation)
        let restored = try? readFile(target + source + "/other.txt")
        #expect(restored.map(sha256) == sha256(other), sourceLocation: sourceLocation)
    }
}

enum Hex6 {
    static func next() -> String { String(UInt32.random(in: 0...UInt32.max), radix: 16) }
}

@Suite("damaged repositories")
struct DamageTests {
    @Test("one flipped byte in a pack: check names the pack, the snapshot and the file; other files restore")
    func flippedByteInPack() throws {
        let repo = try TwoSnapshotRepository("flip")
        let (pack, size) = repo.victimPack
        let fd = try check("open", pack) { open(pack, O_RDWR | O_CLOEXEC) }
        var byte: UInt8 = 0
        try check("pread", pack) { pread(fd, &byte, 1, off_t(size / 2)) }
        byte ^= 0x40
        try check("pwrite", pack) { pwrite(fd, &byte, 1, off_t(size / 2)) }
        close(fd)

        // Without --read-data, the structure is intact (the damage is inside a data blob).
        let quick = try repo.sandbox.kho("check")
        #expect(quick.exitCode == 0, "\(quick)")
        try repo.expectDamageTraced(pack: pack)
        try repo.expectOtherFileRestores()
        try repo.expectFullRestoreReportsDamage()
        // `kho dump` of the damaged file fails with an integrity error, not with wrong bytes.
        let dump = try repo.sandbox.kho("dump", "latest", repo.source + "/damaged.bin")
        #expect(dump.exitCode == 12, "\(dump.exitCode.map(String.init) ?? "signal") \(dump.err)")
        #expect(sha256(dump.stdout) != sha256(repo.damaged))
    }

    @Test("a pack deleted: check names it, the snapshot and the file; other files restore")
    func deletedPack() throws {
        let repo = try TwoSnapshotRepository("delete")
        let (pack, _) = repo.victimPack
        try check("unlink", pack) { unlink(pack) }

        // The structure check alone already sees a missing pack.
        let quick = try repo.sandbox.kho("check")
        #expect(quick.exitCode == 12, "\(quick)")
        #expect(quick.out.contains(String(TwoSnapshotRepository.name(pack).prefix(8))), "\(quick)")
        try repo.expectDamageTraced(pack: pack)
        try repo.expectOtherFileRestores()
        try repo.expectFullRestoreReportsDamage()
    }

    @Test("a truncated index file: check fails and names it")
    func truncatedIndex() throws {
        let repo = try TwoSnapshotRepository("index")
        let indexes = try repo.sandbox.repositoryFiles("index")
        try #require(!indexes.isEmpty)
        // The newest index file lists the second backup's packs.
        let newest = try indexes.keys.max { a, b in
            var sa = stat(), sb = stat()
            try check("stat", a) { stat(a, &sa) }
            try check("stat", b) { stat(b, &sb) }
            return (sa.st_mtim.tv_sec, sa.st_mtim.tv_nsec) < (sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec)
        }!
        try check("truncate", newest) { truncate(newest, off_t(indexes[newest]! / 2)) }

        for arguments in [["check"], ["check", "--read-data"]] {
            let result = try repo.sandbox.kho(arguments)
            #expect(result.exitCode == 12, "\(result)")
            #expect(result.out.contains(String(TwoSnapshotRepository.name(newest).prefix(8))), "check must name the index file: \(result)")
        }
        // The first snapshot's trees and data are listed by the first backup's index: it still restores.
        try repo.expectOtherFileRestores(from: repo.firstSnapshot)
    }
}
