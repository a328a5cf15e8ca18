import Foundation
import Testing
import KhoCore
import KhoSupport

// Which stored dump `kho restore --to-database/--to-file/--stdout` means in a snapshot.

private func snapshot(kind: String, paths: [String], databases: [(name: String, file: String)]? = nil) throws -> Snapshot {
    var manifest: JSONValue?
    if let databases {
        manifest = try DumpManifest(engine: "postgres", serverVersion: "16.4", checksumMethod: "test",
                                    databases: databases.map { .init(name: $0.name, file: $0.file, sizeBytes: 10, tables: []) }).json
    }
    var s = Snapshot(time: Date(timeIntervalSince1970: 1_800_000_000), tree: BlobID(w0: 0, w1: 0, w2: 0, w3: 0), paths: paths,
                     hostname: "kho-1", username: "root", tags: [], parent: nil, source: SnapshotSource(kind: kind, name: "ho-tich"),
                     partial: false, summary: nil, manifest: manifest)
    s.id = "0123456789abcdef"
    return s
}

@Suite struct DumpSelectorTests {
    @Test("a database snapshot: its one database, or the one named; several need a name")
    func databases() throws {
        let one = try snapshot(kind: "postgres", paths: ["ho_tich.sql"], databases: [("ho_tich", "ho_tich.sql")])
        let chosen = try DumpSelector.dump(in: one)
        #expect(chosen.file == "ho_tich.sql" && chosen.manifest?.name == "ho_tich")

        let two = try snapshot(kind: "postgres", paths: ["a.sql", "b.sql"], databases: [("a", "a.sql"), ("b", "b.sql")])
        #expect(try DumpSelector.dump(in: two, database: "b").file == "b.sql")
        let several = #expect(throws: KhoError.self) { try DumpSelector.dump(in: two) }
        #expect(several?.kind == .usage && several?.message == "Snapshot 01234567 holds several databases (a, b): choose one with --database NAME.")
        let absent = #expect(throws: KhoError.self) { try DumpSelector.dump(in: two, database: "c") }
        #expect(absent?.message == "Snapshot 01234567 holds no database c; it holds a, b.")
    }

    @Test("a stream snapshot is its one file; a files snapshot is not a dump unless a file is named")
    func streamsAndFiles() throws {
        let stream = try snapshot(kind: "stdin", paths: ["notes.txt"])
        #expect(try DumpSelector.dump(in: stream).file == "notes.txt")
        #expect(try DumpSelector.dump(in: stream).manifest == nil)
        let files = try snapshot(kind: "files", paths: ["/srv/data"])
        let error = #expect(throws: KhoError.self) { try DumpSelector.dump(in: files) }
        #expect(error?.kind == .usage && error?.message.contains("is not a single dump") == true)
    }

    @Test("a dump name with a path in it is refused as not written by kho")
    func notPlainName() throws {
        let forged = try snapshot(kind: "postgres", paths: ["x.sql"], databases: [("x", "../../etc/passwd")])
        let error = #expect(throws: KhoError.self) { try DumpSelector.dump(in: forged) }
        #expect(error?.kind == .integrity)
    }
}
