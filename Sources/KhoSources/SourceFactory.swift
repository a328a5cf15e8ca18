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

    /// A SQLite source: the database file at `path`.
    public static func sqlite(path: String, name: String) -> SourceSpec {
        var spec = SourceSpec(name: name, kind: .sqlite)
        spec.sqlitePath = path
        return spec
    }

    /// The loader that puts a dump of this database source back into its endpoint's database;
    /// with `replace`, a database that exists and has tables is loaded beside and swapped in.
    public func loader(replace: Bool) throws -> DatabaseLoader {
        guard let endpoint, kind == .postgres || kind == .mariadb else {
            throw KhoError(.usage, "Source \(name) is a \(kind.rawValue) source: only postgres and mariadb dumps load into a database.")
        }
        return DatabaseLoader(engine: kind, target: endpoint, replace: replace, sourceName: name)
    }
}
