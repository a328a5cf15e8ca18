import Foundation
import KhoCore
import KhoSupport

/// Sources and loaders named on the command line, built the way a policy builds them: into a
/// `SourceSpec`, then through its one factory (`make()`, `loader(replace:)`), so that
/// `kho backup --postgres` and a policy's postgres source dump alike, and `kho restore
/// --to-database` and a drill load alike.
extension SourceSpec {
    /// A database source from a `postgres://` or `mariadb://` URL (`USER@HOST:PORT/DB`); with
    /// `databaseList`, the path may name several databases (`DB1,DB2`), as `kho backup` allows.
    /// The password comes from `passwordFile` or the variable `passwordEnv`, never the URL.
    public static func database(url: String, name: String, passwordFile: String?, passwordEnv: String?,
                                databaseList: Bool = false) throws -> SourceSpec {
        var (kind, endpoint) = try DatabaseEndpoint.parse(url)
        var spec = SourceSpec(name: name, kind: kind)
        spec.databases = databaseList ? endpoint.database.split(separator: ",").map(String.init) : [endpoint.database]
        // As a policy's endpoint: its database is the first one (what a connection without a
        // database of its own goes to).
        endpoint.database = spec.databases.first ?? endpoint.database
        endpoint.passwordFile = passwordFile
        endpoint.passwordEnv = passwordEnv
        spec.endpoint = endpoint
        return spec
    }

    /// A base backup source from `postgres://USER@HOST:PORT` (a database in the path is where kho
    /// runs its own queries; `postgres` when none is given). The login needs REPLICATION.
    public static func postgresBase(url: String, name: String, passwordFile: String?, passwordEnv: String?) throws -> SourceSpec {
        var text = url
        if let components = URLComponents(string: url), components.path.drop(while: { $0 == "/" }).isEmpty {
            text = url.hasSuffix("/") ? url + "postgres" : url + "/postgres"
        }
        var (kind, endpoint) = try DatabaseEndpoint.parse(text)
        guard kind == .postgres else {
            throw KhoError(.usage, "\(url) is a \(kind.rawValue) URL: base backups are of PostgreSQL clusters (postgres://USER@HOST:PORT).")
        }
        endpoint.passwordFile = passwordFile
        endpoint.passwordEnv = passwordEnv
        var spec = SourceSpec(name: name, kind: .postgresBase)
        spec.endpoint = endpoint
        return spec
    }

    /// A SQLite source: the database file at `path`.
    public static func sqlite(path: String, name: String) -> SourceSpec {
        var spec = SourceSpec(name: name, kind: .sqlite)
        spec.sqlitePath = path
        return spec
    }

    /// The restore that puts the dump `dumpFile` of `files` back into this source's endpoint's
    /// database (`DatabaseRestore`, the path drills take too).
    public func restore(options: DatabaseRestoreOptions, dumpFile: String, recorded: DumpManifest.Database?,
                        files: any DumpFiles) throws -> DatabaseRestore {
        try DatabaseRestore(engine: kind, target: try restoreTarget(), options: options, sourceName: name, dumpFile: dumpFile,
                            recorded: recorded, files: files)
    }

    /// The database a restore of this source loads into: its endpoint, for postgres and mariadb only.
    public func restoreTarget() throws -> DatabaseEndpoint {
        guard let endpoint, kind == .postgres || kind == .mariadb else {
            throw KhoError(.usage, "Source \(name) is a \(kind.rawValue) source: only postgres and mariadb dumps load into a database.")
        }
        return endpoint
    }
}
