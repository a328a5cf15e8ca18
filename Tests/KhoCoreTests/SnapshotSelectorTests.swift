import Foundation
import Testing
import KhoCore
import KhoSupport

// Which snapshot `restore`, `ls`, `dump`, `copy` and `forget` mean by what the operator typed.

private func time(_ text: String) -> Date { Timestamp.parse(text)! }

private func snapshot(_ id: String, source: String?, at text: String, partial: Bool = false, kind: String = "postgres") -> Snapshot {
    var s = Snapshot(time: time(text), tree: BlobID(w0: 0, w1: 0, w2: 0, w3: 0), paths: ["dump.sql"], hostname: "kho-1", username: "root",
                     tags: [], parent: nil, source: SnapshotSource(kind: kind, name: source), partial: partial, summary: nil, manifest: nil)
    s.id = id
    return s
}

private let history = [
    snapshot("aa01", source: "regions", at: "2026-11-01T02:00:00+07:00"),
    snapshot("bb02", source: "hr", at: "2026-11-01T03:00:00+07:00"),
    snapshot("cc03", source: "regions", at: "2026-11-02T02:00:00+07:00"),
    snapshot("dd04", source: "regions", at: "2026-11-03T02:00:00+07:00", partial: true),
]

@Suite struct SnapshotSelectorTests {
    @Test("by source: the newest complete snapshot at or before the time")
    func bySourceAndTime() throws {
        #expect(try SnapshotSelector(source: "regions").newest(of: history).id == "cc03", "a partial snapshot is never picked by source")
        #expect(try SnapshotSelector(source: "regions", at: time("2026-11-02T01:59:59+07:00")).newest(of: history).id == "aa01")
        #expect(try SnapshotSelector(source: "regions", at: time("2026-11-02T02:00:00+07:00")).newest(of: history).id == "cc03",
                "at the very second counts")
        #expect(try SnapshotSelector(source: "hr").newest(of: history).id == "bb02")
    }

    @Test("none found: the message names the source and the time as typed")
    func noneFound() {
        let early = #expect(throws: KhoError.self) {
            try SnapshotSelector(source: "regions", at: time("2026-10-31T12:00:00+07:00"), atText: "2026-10-31 12:00").newest(of: history)
        }
        #expect(early?.kind == .usage)
        #expect(early?.message == "No snapshot of source regions at or before 2026-10-31 12:00: see `kho snapshots`.")
        let unknown = #expect(throws: KhoError.self) { try SnapshotSelector(source: "payroll").newest(of: history) }
        #expect(unknown?.message == "No snapshot of source payroll: see `kho snapshots`.")
    }

    @Test("by prefix: one match is the snapshot; several ask for more digits; none points at `kho snapshots`")
    func prefixes() throws {
        let names = ["3f2a9c", "3f7710", "a01b22"]
        #expect(try SnapshotSelector.uniqueName("3f2", among: names) == "3f2a9c")
        #expect(try SnapshotSelector.uniqueName("A01B", among: names) == "a01b22", "prefixes are case-insensitive")
        let ambiguous = #expect(throws: KhoError.self) { try SnapshotSelector.uniqueName("3f", among: names) }
        #expect(ambiguous?.kind == .usage && ambiguous?.message == "2 snapshots have IDs starting with 3f: give more digits.")
        let none = #expect(throws: KhoError.self) { try SnapshotSelector.uniqueName("bead", among: names) }
        #expect(none?.message == "No snapshot has an ID starting with bead: see `kho snapshots`.")
        let notHex = #expect(throws: KhoError.self) { try SnapshotSelector.uniqueName("newest", among: names) }
        #expect(notHex?.message.hasPrefix("\"newest\" is not a snapshot ID") == true)
    }

    @Test("in a repository: latest, a prefix, an ambiguous prefix, and a snapshot of another source than --source")
    func inRepository() throws {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        let repository = try Repository.create(storage: MemoryStorage(), password: Array("selector".utf8), options: options)
        // Seventeen snapshots: two of them share their first hex digit, whatever their IDs are.
        var ids: [String] = []
        for day in 1...17 {
            let s = snapshot("", source: day % 2 == 0 ? "hr" : "regions", at: String(format: "2026-11-%02dT02:00:00+07:00", day))
            ids.append(try repository.saveSnapshot(s).hex)
        }
        #expect(try SnapshotSelector(reference: "latest").select(in: repository).id == ids[16])
        #expect(try SnapshotSelector(reference: "latest", source: "hr").select(in: repository).id == ids[15], "latest of the source")
        #expect(try SnapshotSelector(reference: String(ids[3].prefix(12))).select(in: repository).id == ids[3])

        let shared = Dictionary(grouping: ids, by: { $0.prefix(1) }).first { $0.value.count > 1 }!
        let ambiguous = #expect(throws: KhoError.self) { try SnapshotSelector(reference: String(shared.key)).select(in: repository) }
        #expect(ambiguous?.message == "\(shared.value.count) snapshots have IDs starting with \(shared.key): give more digits.")

        let other = #expect(throws: KhoError.self) {
            try SnapshotSelector(reference: String(ids[0].prefix(12)), source: "hr").select(in: repository)
        }
        #expect(other?.message == "Snapshot \(ids[0].prefix(8)) is of source regions, not hr.")
        #expect(try SnapshotSelector(source: "regions", at: time("2026-11-04T00:00:00+07:00")).select(in: repository).id == ids[2])
    }

    @Test("suggested concurrency follows what the storage says of itself, not its address")
    func storageTuning() {
        let local = MemoryStorage()
        #expect(local.suggestedUploaders == 1 && local.suggestedCheckWorkers(2) == 2 && local.suggestedRestoreWorkers(2) == 2)
        let remote = RequestStorage()
        #expect(remote.suggestedUploaders == 4 && remote.suggestedCheckWorkers(2) == 4 && remote.suggestedRestoreWorkers(2) == 8)
        #expect(remote.suggestedCheckWorkers(16) == 16 && remote.suggestedRestoreWorkers(16) == 16, "never fewer than the machine's own")
    }
}

/// A storage whose reads are requests, at an address that does not start with `s3:`.
private final class RequestStorage: Storage, @unchecked Sendable {
    let inner = MemoryStorage()
    var location: String { "https://objects.example/bucket" }
    var readsAreRequests: Bool { true }
    func save(_ handle: Handle, data: [UInt8]) throws { try inner.save(handle, data: data) }
    func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] { try inner.load(handle, offset: offset, length: length) }
    func stat(_ handle: Handle) throws -> StoredFile { try inner.stat(handle) }
    func list(_ kind: FileKind) throws -> [StoredFile] { try inner.list(kind) }
    func remove(_ handle: Handle) throws { try inner.remove(handle) }
    func isEmpty() throws -> Bool { try inner.isEmpty() }
}
