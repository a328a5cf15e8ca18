internal import CPostgres
import Foundation
import KhoSupport

/// One connection to a PostgreSQL server through libpq. Statements are sent one at a time with
/// `PQexecParams`: values travel as parameters, separate from the statement's text, and a statement
/// is never more than one statement. Rows come back as text, as the server writes them.
///
/// Not for concurrent use: one thread at a time, as a libpq connection.
package final class PostgresConnection {
    private let handle: OpaquePointer
    package let source: String

    /// Connects to `database` on `endpoint` (its socket folder or host and port), logging in as its
    /// user with its password, which goes to libpq and nowhere else. Within 10 seconds.
    ///
    /// libpq takes what is not given here from the PG* environment variables (PGSSLMODE,
    /// PGSSLROOTCERT, PGPASSFILE …), as the administrator's clients do. A drill's scratch server
    /// (`isolated`) is reached only through its private socket: the settings that could send the
    /// connection, and the restored data, elsewhere are given explicitly or refused.
    package init(endpoint: DatabaseEndpoint, database: String, source: String, connectTimeout: Int = 10) throws {
        self.source = source
        var parameters: [(String, String)] = [
            ("host", endpoint.host), ("port", String(endpoint.port)), ("user", endpoint.user), ("dbname", database),
            ("connect_timeout", String(connectTimeout)), ("application_name", "kho"), ("client_encoding", "UTF8"),
        ]
        if let password = try endpoint.password(), !password.isEmpty { parameters.append(("password", password)) }
        if endpoint.isolated {
            let environment = ProcessInfo.processInfo.environment
            for name in ["PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE"] where !(environment[name] ?? "").isEmpty {
                throw KhoError(.usage, "\(name) is set: it would send kho's connection to the drill's scratch PostgreSQL elsewhere; unset it for the drill.")
            }
            parameters += [("sslmode", "disable"), ("gssencmode", "disable"), ("options", " "),
                           ("target_session_attrs", "any")]
        }
        let keywords = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            keywords.forEach { free($0) }
            // The password's copy is wiped before it is freed.
            for value in values { if let value { memset(value, 0, strlen(value)) }; free(value) }
        }
        var keywordPointers = keywords.map { UnsafePointer($0) } + [nil]
        var valuePointers = values.map { UnsafePointer($0) } + [nil]
        // expand_dbname 0: the database name is a name, never a connection string.
        guard let connection = PQconnectdbParams(&keywordPointers, &valuePointers, 0) else {
            throw KhoError(.failure, "Source \(source): libpq could not allocate a connection; the machine is out of memory.")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(connection))
            PQfinish(connection)
            throw ClientFailure.classify(message).error(detail: message, engine: "postgres", source: source)
        }
        handle = connection
    }

    deinit { PQfinish(handle) }

    /// Runs one statement with `parameters` as $1, $2 … (text; nil is NULL) and returns its rows,
    /// each column as text or nil for NULL.
    @discardableResult
    package func query(_ sql: String, _ parameters: [String?] = []) throws -> [[String?]] {
        let copies: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { copies.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
        let result = pointers.withUnsafeMutableBufferPointer { buffer in
            PQexecParams(handle, sql, Int32(parameters.count), nil, buffer.baseAddress, nil, nil, 0)
        }
        guard let result else { throw failure(nil) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY: break
        default: throw failure(result)
        }
        let rows = PQntuples(result)
        let columns = PQnfields(result)
        var table: [[String?]] = []
        table.reserveCapacity(Int(rows))
        for row in 0..<rows {
            var values: [String?] = []
            values.reserveCapacity(Int(columns))
            for column in 0..<columns {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    let length = Int(PQgetlength(result, row, column))
                    let bytes = UnsafeRawBufferPointer(start: PQgetvalue(result, row, column), count: length)
                    values.append(String(decoding: bytes, as: UTF8.self))
                }
            }
            table.append(values)
        }
        return table
    }

    /// The first column of the first row, or nil.
    package func value(_ sql: String, _ parameters: [String?] = []) throws -> String? {
        try query(sql, parameters).first?.first ?? nil
    }

    private func failure(_ result: OpaquePointer?) -> KhoError {
        let message = String(cString: PQerrorMessage(handle))
        if let result, let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))) {
            return PostgresConnection.classify(state: String(cString: state), message: message).error(detail: message, engine: "postgres", source: source)
        }
        return ClientFailure.classify(message).error(detail: message, engine: "postgres", source: source)
    }

    /// By SQLSTATE: 28 login, 42501 privilege, 3D000 missing database, 55P03 lock timeout,
    /// 08 and 57P (the connection or the server went away) unreachable.
    static func classify(state: String, message: String) -> ClientFailure {
        switch state {
        case "28P01", "28000": return .login
        case "42501": return .privilege
        case "3D000": return .noDatabase
        case "55P03": return .lockTimeout
        default:
            if state.hasPrefix("08") || state.hasPrefix("57P") { return .unreachable }
            return .other
        }
    }
}
