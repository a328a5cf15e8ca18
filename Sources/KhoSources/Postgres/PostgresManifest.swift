import Foundation
import KhoCore
import KhoSupport

/// What a PostgreSQL manifest records of a database: per table the row count and the sum of the
/// first 64 bits of each row's MD5 (over the row's text form), which does not depend on the order
/// the server returns rows. The SQL is the one kho has always run, so that a manifest recomputed
/// after a restore compares with one recorded by an older kho.
package enum PostgresManifest {
    static let checksumMethod = "postgres: sum over rows of the first 64 bits of md5(row::text), as a decimal number"

    /// Every ordinary and partitioned table outside the system schemas, with its row count and
    /// checksum, in schema and name order.
    package static func tables(_ connection: PostgresConnection) throws -> [DumpManifest.Table] {
        let names = try connection.query("""
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
            ORDER BY n.nspname, c.relname
            """)
        var tables: [DumpManifest.Table] = []
        for row in names {
            guard row.count == 2, let schema = row[0], let table = row[1] else {
                throw KhoError(.source, "Source \(connection.source): PostgreSQL returned a table without a name: report this as a bug.")
            }
            let quoted = SQLIdentifier.postgres(schema) + "." + SQLIdentifier.postgres(table)
            let values = try connection.query(
                "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) FROM ONLY \(quoted) AS t").first ?? []
            tables.append(DumpManifest.Table(schema: schema, name: table, rows: Int64((values.first ?? nil) ?? "") ?? -1,
                                             checksum: (values.count > 1 ? values[1] : nil) ?? ""))
        }
        return tables
    }
}
