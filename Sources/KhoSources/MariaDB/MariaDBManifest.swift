import Foundation
import KhoCore
import KhoSupport

/// What a MariaDB manifest records of a database: per table the row count and the sum of the
/// first 64 bits of MD5 over each row's quoted column values. The checksum's SQL is the one kho
/// has always run, so that a manifest recomputed after a restore compares with one recorded by an
/// older kho.
enum MariaDBManifest {
    static let checksumMethod = "mariadb: sum over rows of the first 64 bits of MD5(CONCAT_WS('|', QUOTE(column)...)), as a decimal number"

    /// `systemVersioned`: also system-versioned tables, which a kho before issue 19 left out of its
    /// manifests (a restore of such a snapshot compares what it recorded).
    static func tables(_ connection: MariaDBConnection, database: String, systemVersioned: Bool = true) throws -> [DumpManifest.Table] {
        let quote = SQLIdentifier.mariadb
        let types = systemVersioned ? "'BASE TABLE', 'SYSTEM VERSIONED'" : "'BASE TABLE'"
        let names = try MariaDBManifest.names(connection, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN (\(types)) ORDER BY TABLE_NAME", [database])
        var tables: [DumpManifest.Table] = []
        for table in names {
            let columns = try MariaDBManifest.names(connection, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", [database, table])
            let row = columns.map { "QUOTE(\(quote($0)))" }.joined(separator: ", ")
            let values = try connection.query("SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('|', \(row))), 1, 16), 16, 10) AS DECIMAL(65,0))), 0) FROM \(quote(database)).\(quote(table))").first ?? []
            tables.append(DumpManifest.Table(schema: "", name: table, rows: Int64((values.first ?? nil) ?? "") ?? -1,
                                             checksum: (values.count > 1 ? values[1] : nil) ?? ""))
        }
        return tables
    }

    /// The first column of each row, all of them names.
    static func names(_ connection: MariaDBConnection, _ sql: String, _ parameters: [String]) throws -> [String] {
        try connection.query(sql, parameters).map { row in
            guard let name = row.first ?? nil else {
                throw KhoError(.source, "Source \(connection.source): MariaDB returned a NULL name: report this as a bug.")
            }
            return name
        }
    }
}
