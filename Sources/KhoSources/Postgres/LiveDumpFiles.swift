import Foundation
import KhoCore
import KhoSupport

/// One database of a running PostgreSQL cluster as the files a database restore reads
/// (docs/design/pitr.md section 6 and decision 9): the database of a scratch cluster recovered to a
/// point in time, carried over by the same `DatabaseRestore` a stored dump takes.
///
/// It holds a REPEATABLE READ transaction open with an exported snapshot and, in it, records the
/// manifest's tables, the schema fingerprint and the globals first (as a nightly dump records them,
/// `PostgresSource.describe`), so that the restore's plan has the globals and its comparison proves
/// the copy equal to the cluster at the point; the dump is `pg_dump --snapshot` of that snapshot,
/// streamed straight into the restore. Nothing is written to a file or a repository.
///
/// Not for concurrent use; `finish()` (or deinit) ends the transaction, after which the dump
/// cannot be streamed any more.
public final class LiveDumpFiles: DumpFiles {
    /// What the restore compares with: the database's tables, rows and checksums and its schema
    /// fingerprint, read in the snapshot the dump reads.
    public let recorded: DumpManifest.Database
    public let serverVersion: String
    private let connection: PostgresConnection
    private let snapshot: String
    private let source: PostgresSource
    private let small: [String: [UInt8]]
    private var open = true

    /// Opens `database` on `endpoint` (the recovered cluster's private socket). A name the cluster
    /// does not hold is a usage error naming those it does.
    public init(endpoint: DatabaseEndpoint, database: String, sourceName: String) throws {
        var at = endpoint
        at.database = database
        source = PostgresSource(name: sourceName, endpoint: at, databases: [database], includeGlobals: false)
        let names = try LiveDumpFiles.databases(endpoint: endpoint, sourceName: sourceName)
        guard names.contains(database) else {
            throw KhoError(.usage, "The recovered cluster has no database \(database): it holds \(names.isEmpty ? "none that accepts connections" : names.joined(separator: ", ")); give one of them with --database.")
        }
        connection = try source.connect(database: database)
        try connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        guard let exported = try connection.value("SELECT pg_export_snapshot()"), !exported.isEmpty else {
            throw KhoError(.source, "Source \(sourceName): the recovered cluster did not export a snapshot of \(database): report this as a bug.")
        }
        snapshot = exported
        let facts = try PostgresSource.facts(connection)
        serverVersion = facts.version
        let described = try PostgresSource.describe(connection, database: database, sizeBytes: facts.size, sequenceValues: nil)
        recorded = described.entry
        let files = PostgresSource.files(database)
        small = [files.schema: described.schema, files.globals: described.globals]
    }

    /// The databases of the cluster that take connections, by name.
    public static func databases(endpoint: DatabaseEndpoint, sourceName: String) throws -> [String] {
        let connection: PostgresConnection
        do {
            connection = try PostgresConnection(endpoint: endpoint, database: "postgres", source: sourceName)
        } catch {
            // try?: template1 is only the second choice; the first error is the one to report.
            guard let fallback = try? PostgresConnection(endpoint: endpoint, database: "template1", source: sourceName) else { throw error }
            connection = fallback
        }
        return try connection.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
            .compactMap { $0.first ?? nil }
    }

    /// The dump's name, as a restore asks for it.
    public var dumpFile: String { recorded.file }

    /// The fingerprint's and the globals' sizes; nil for the dump, whose size is known only once
    /// pg_dump has written it.
    public func size(_ name: String) -> Int64? { small[name].map { Int64($0.count) } }

    public func read(_ name: String, limit: Int) throws -> [UInt8] {
        guard let bytes = small[name] else {
            throw KhoError(.failure, "The live dump of \(recorded.name) has no file \(name) to read: report this as a bug.")
        }
        guard bytes.count <= limit else {
            throw KhoError(.source, "\(name) of \(recorded.name) is \(bytes.count) bytes, more than the \(limit >> 20) MiB a restore reads: the database's schema is too large for kho; restore it with pg_dump by hand.")
        }
        return bytes
    }

    /// Runs `pg_dump --snapshot` of the held snapshot and hands its output to `write` as it comes.
    public func stream(_ name: String, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard name == recorded.file else {
            throw KhoError(.failure, "The live dump of \(recorded.name) has no file \(name) to stream: report this as a bug.")
        }
        guard open else {
            throw KhoError(.failure, "The snapshot of \(recorded.name) was released before its dump was read: report this as a bug.")
        }
        let stream = try source.dumpStream(try source.tool("pg_dump"), database: recorded.name, snapshot: snapshot)
        try stream.start()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        do {
            while true {
                let count = try stream.read(buffer)
                if count == 0 { break }
                try write(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            }
        } catch {
            stream.terminate()
            throw error
        }
        try stream.finish()
    }

    /// Ends the read-only transaction (the snapshot is released).
    public func finish() throws {
        guard open else { return }
        open = false
        try connection.query("COMMIT")
    }
}
