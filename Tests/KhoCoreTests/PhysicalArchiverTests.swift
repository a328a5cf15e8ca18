import Foundation
import Testing
@testable import KhoCore
import KhoSupport

// PhysicalArchiver stores each member of a base backup's tar stream as a file under `data/`,
// relation files cut at fixed blocks so that one changed page costs one block (FORMAT.md 21).
// The archives are built by `TarBuilder` (TarStreamTests.swift).

@Suite("physical archiver")
struct PhysicalArchiverTests {
    @Test("relation files are the paths PostgreSQL gives relations", arguments: [
        ("base/1/112", true), ("base/16384/16385.1", true), ("base/5/2619_fsm", true), ("base/5/2619_vm.12", true),
        ("base/5/16390_init", true), ("global/1262", true), ("global/2676_vm", true),
        ("global/pg_control", false), ("global/pg_filenode.map", false), ("base/1/PG_VERSION", false), ("base/1/pg_filenode.map", false),
        ("base/1/112.", false), ("base/1/112_fsm_vm", false), ("base/1/112_xx", false), ("base/x/112", false), ("base/112", false),
        ("pg_xact/0000", false), ("base/1/2/3", false), ("PG_VERSION", false), ("base/1/112.1a", false), ("base/1/t3_16384", false),
    ])
    func relationFiles(_ path: String, _ expected: Bool) {
        #expect(PhysicalArchiver.isRelationFile(path) == expected)
    }

    private func repository() throws -> Repository {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        return try Repository.create(storage: MemoryStorage(), password: Array("test password".utf8), options: options)
    }

    private func backup(_ bytes: [UInt8], repository: Repository) throws -> (Snapshot, PhysicalContents) {
        let archiver = try Archiver(repository: repository, index: try repository.loadIndex(), options: BackupOptions()) { _ in }
        let physical = try PhysicalArchiver(archiver: archiver)
        physical.capture = ["PG_VERSION": 64]
        var seen = PhysicalContents()
        let tar = TarStream(what: "test stream", read: TarBuilder.reader(bytes, step: 100_000))
        let snapshot = try physical.backup(tar, sourceName: "cluster", source: SnapshotSource(kind: .postgresBase, name: "cluster"),
                                           tags: ["base"], finish: {}) { contents in
            seen = contents
            return nil
        }
        return (snapshot, seen)
    }

    @Test("one node per member under data/, relation files in 128 KiB blocks: a changed page costs one block")
    func blocks() throws {
        let relation = randomBytes(300 << 10, seed: 5)
        func archive(_ relation: [UInt8]) -> [UInt8] {
            var tar = TarBuilder()
            tar.add("PG_VERSION", content: Array("15\n".utf8))
            tar.add("base/", type: UInt8(ascii: "5"), mode: 0o700)
            tar.add("base/1/16384", content: relation, mode: 0o600)
            tar.add("pg_wal/", type: UInt8(ascii: "5"), mode: 0o700)
            tar.end()
            return tar.bytes
        }
        let repo = try repository()
        let (first, contents) = try backup(archive(relation), repository: repo)
        #expect(first.tags == ["base"] && first.paths == ["data"])
        #expect(contents.files == ["PG_VERSION": 3, "base/1/16384": UInt64(300 << 10)])
        #expect(contents.captured["PG_VERSION"] == Array("15\n".utf8))
        let index = try repo.loadIndex()
        let codec = try BlobCodec(repository: repo)
        let root = try repo.loadTree(try #require(first.treeID), index: index, codec: codec)
        let data = try #require(root.node(named: Array("data".utf8)))
        #expect(root.nodes.count == 1 && data.kind == .directory && data.mode == 0o700 && data.uid == 26)
        let top = try repo.loadTree(try #require(data.subtree), index: index, codec: codec)
        #expect(top.nodes.map(\.nameString) == ["PG_VERSION", "base", "pg_wal"])
        let base = try repo.loadTree(try #require(top.node(named: Array("base".utf8))?.subtree), index: index, codec: codec)
        let one = try #require(base.node(named: Array("1".utf8)))  // implied by the member's name
        let files = try repo.loadTree(try #require(one.subtree), index: index, codec: codec)
        let file = try #require(files.node(named: Array("16384".utf8)))
        #expect(file.content.count == 3 && file.size == UInt64(300 << 10) && file.mode == 0o600)

        var changed = relation
        changed[140_000] ^= 0xff  // one page in the second block
        let (second, _) = try backup(archive(changed), repository: repo)
        let summary = try #require(second.summary)
        #expect(summary.bytesNewRaw >= 128 << 10 && summary.bytesNewRaw < (128 << 10) + 4096, "\(summary.bytesNewRaw)")
    }

    @Test("a member named twice, or below a file, records nothing")
    func duplicates() throws {
        var twice = TarBuilder()
        twice.add("PG_VERSION", content: [1])
        twice.add("PG_VERSION", content: [2])
        twice.end()
        var below = TarBuilder()
        below.add("global", content: [1])
        below.add("global/1262", content: [2])
        below.end()
        let repo = try repository()
        for bytes in [twice.bytes, below.bytes] {
            #expect(throws: KhoError.self) { _ = try backup(bytes, repository: repo) }
        }
        #expect(try repo.listSnapshots().isEmpty)
    }
}
