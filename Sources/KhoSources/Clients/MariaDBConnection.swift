internal import CMariaDB
import Foundation
import KhoSupport

/// One connection to a MariaDB (or MySQL) server through MariaDB Connector/C. A statement with
/// values is a prepared statement, its values bound as parameters; a statement without values
/// goes as text (names in it are quoted with `SQLIdentifier.mariadb`). The connection never runs
/// more than one statement per call (multi-statements stay off), and nothing a client program
/// would read as its own command (`\!`, `source`) exists here. Rows come back as text.
///
/// Not for concurrent use: one thread at a time, as a Connector/C connection.
package final class MariaDBConnection {
    private let handle: UnsafeMutablePointer<MYSQL>
    package let source: String

    /// Connector/C's global state is set up once, before the first connection: doing it inside
    /// concurrent `mysql_init` calls is not thread-safe.
    private static let library: Int32 = mysql_server_init(0, nil, nil)

    /// Connects to `endpoint` (its socket file or host and port) as its user with its password,
    /// which goes to the connector and nowhere else; into `database` when given. Within 10
    /// seconds. A production server's connection reads the administrator's [client] option files
    /// (SSL settings …) as the mariadb client does; a drill's scratch server's reads none.
    package init(endpoint: DatabaseEndpoint, database: String?, source: String, connectTimeout: UInt32 = 10) throws {
        self.source = source
        guard MariaDBConnection.library == 0, let connection = mysql_init(nil) else {
            throw KhoError(.failure, "Source \(source): the MariaDB connector could not be initialised; the machine is out of memory.")
        }
        var timeout = connectTimeout
        mysql_options(connection, MYSQL_OPT_CONNECT_TIMEOUT, &timeout)
        var protocolType = UInt32(endpoint.isSocket ? MYSQL_PROTOCOL_SOCKET.rawValue : MYSQL_PROTOCOL_TCP.rawValue)
        mysql_options(connection, MYSQL_OPT_PROTOCOL, &protocolType)
        mysql_options(connection, MYSQL_SET_CHARSET_NAME, "utf8mb4")
        if !endpoint.isolated { mysql_options(connection, MYSQL_READ_DEFAULT_GROUP, "client") }
        let password = try endpoint.password()
        // Without a configured password: none for a scratch server; for a production server the
        // option files' (as the mariadb client), but never kho's own MYSQL_PWD.
        let sentPassword: String? = password ?? (endpoint.isolated || ProcessInfo.processInfo.environment["MYSQL_PWD"] != nil ? "" : nil)
        let connected = withOptionalCString(sentPassword) { passwordPointer in
            mysql_real_connect(connection, endpoint.isSocket ? nil : endpoint.host, endpoint.user, passwordPointer, database,
                               endpoint.isSocket ? 0 : UInt32(endpoint.port), endpoint.isSocket ? endpoint.host : nil, 0)
        }
        guard connected != nil else {
            let code = mysql_errno(connection)
            let message = String(cString: mysql_error(connection))
            mysql_close(connection)
            throw MariaDBConnection.classify(code: code, message: message).error(detail: message, engine: "mariadb", source: source)
        }
        handle = connection
    }

    deinit { mysql_close(handle) }

    /// Runs one statement and returns its rows, each column as text or nil for NULL. With
    /// `parameters`, the statement is prepared and each `?` is bound to one value.
    @discardableResult
    package func query(_ sql: String, _ parameters: [String?] = []) throws -> [[String?]] {
        parameters.isEmpty ? try text(sql) : try prepared(sql, parameters)
    }

    /// The first column of the first row, or nil.
    package func value(_ sql: String, _ parameters: [String?] = []) throws -> String? {
        try query(sql, parameters).first?.first ?? nil
    }

    /// `text` as a string literal for statements that take no parameters (CREATE USER … USING,
    /// COMMENT in CREATE DATABASE): the connector escapes it by the connection's character set and
    /// the server's NO_BACKSLASH_ESCAPES mode, as the server will read it.
    package func literal(_ text: String) throws -> String {
        let bytes = Array(text.utf8)
        var escaped = [CChar](repeating: 0, count: bytes.count * 2 + 1)
        let length = bytes.withUnsafeBufferPointer { source in
            source.withMemoryRebound(to: CChar.self) { mysql_real_escape_string(handle, &escaped, $0.baseAddress, UInt($0.count)) }
        }
        guard length <= UInt(bytes.count * 2) else {
            throw KhoError(.failure, "Source \(source): the MariaDB connector could not quote a value for a statement; report this as a bug.")
        }
        let body = escaped.prefix(Int(length)).map { UInt8(bitPattern: $0) }
        return "'" + String(decoding: body, as: UTF8.self) + "'"
    }

    private func text(_ sql: String) throws -> [[String?]] {
        let bytes = Array(sql.utf8)
        guard bytes.withUnsafeBufferPointer({ $0.withMemoryRebound(to: CChar.self) { mysql_real_query(handle, $0.baseAddress, UInt($0.count)) } }) == 0 else {
            throw failure(code: mysql_errno(handle), message: String(cString: mysql_error(handle)))
        }
        guard let result = mysql_store_result(handle) else {
            if mysql_field_count(handle) == 0 { return [] }
            throw failure(code: mysql_errno(handle), message: String(cString: mysql_error(handle)))
        }
        defer { mysql_free_result(result) }
        let columns = Int(mysql_num_fields(result))
        var rows: [[String?]] = []
        while let row = mysql_fetch_row(result) {
            guard let lengths = mysql_fetch_lengths(result) else { break }
            var values: [String?] = []
            values.reserveCapacity(columns)
            for column in 0..<columns {
                if let field = row[column] {
                    values.append(String(decoding: UnsafeRawBufferPointer(start: field, count: Int(lengths[column])), as: UTF8.self))
                } else {
                    values.append(nil)
                }
            }
            rows.append(values)
        }
        if mysql_errno(handle) != 0 { throw failure(code: mysql_errno(handle), message: String(cString: mysql_error(handle))) }
        return rows
    }

    private func prepared(_ sql: String, _ parameters: [String?]) throws -> [[String?]] {
        guard let statement = mysql_stmt_init(handle) else {
            throw failure(code: mysql_errno(handle), message: String(cString: mysql_error(handle)))
        }
        defer { mysql_stmt_close(statement) }
        func statementFailure() -> KhoError {
            failure(code: mysql_stmt_errno(statement), message: String(cString: mysql_stmt_error(statement)))
        }
        let text = Array(sql.utf8)
        guard text.withUnsafeBufferPointer({ $0.withMemoryRebound(to: CChar.self) { mysql_stmt_prepare(statement, $0.baseAddress, UInt($0.count)) } }) == 0 else {
            throw statementFailure()
        }
        guard mysql_stmt_param_count(statement) == UInt(parameters.count) else {
            throw KhoError(.failure, "Source \(source): a statement kho prepared takes \(mysql_stmt_param_count(statement)) values, not \(parameters.count); report this as a bug.")
        }
        // The values' bytes stay allocated until the statement ran.
        let buffers = parameters.map { value -> UnsafeMutableRawBufferPointer? in
            guard let value else { return nil }
            let bytes = Array(value.utf8)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            buffer.copyBytes(from: bytes)
            return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes.count])
        }
        defer { for buffer in buffers { buffer?.deallocate() } }
        var binds = [MYSQL_BIND](repeating: MYSQL_BIND(), count: parameters.count)
        for (i, buffer) in buffers.enumerated() {
            if let buffer {
                binds[i].buffer_type = MYSQL_TYPE_STRING
                binds[i].buffer = buffer.baseAddress
                binds[i].buffer_length = UInt(buffer.count)
            } else {
                binds[i].buffer_type = MYSQL_TYPE_NULL
            }
        }
        guard mysql_stmt_bind_param(statement, &binds) == 0 else { throw statementFailure() }
        guard mysql_stmt_execute(statement) == 0 else { throw statementFailure() }
        guard let metadata = mysql_stmt_result_metadata(statement) else { return [] }
        let columns = Int(mysql_num_fields(metadata))
        mysql_free_result(metadata)
        guard columns > 0 else { return [] }
        // Every column as text: a buffer per column, grown when a value did not fit.
        let capacity = 256
        let storage = UnsafeMutableRawPointer.allocate(byteCount: capacity * columns, alignment: 8)
        let lengths = UnsafeMutablePointer<UInt>.allocate(capacity: columns)
        let nulls = UnsafeMutablePointer<my_bool>.allocate(capacity: columns)
        let truncated = UnsafeMutablePointer<my_bool>.allocate(capacity: columns)
        defer {
            storage.deallocate()
            lengths.deallocate()
            nulls.deallocate()
            truncated.deallocate()
        }
        var results = [MYSQL_BIND](repeating: MYSQL_BIND(), count: columns)
        for i in 0..<columns {
            results[i].buffer_type = MYSQL_TYPE_STRING
            results[i].buffer = storage + i * capacity
            results[i].buffer_length = UInt(capacity)
            results[i].length = lengths + i
            results[i].is_null = nulls + i
            results[i].error = truncated + i
        }
        guard mysql_stmt_bind_result(statement, &results) == 0, mysql_stmt_store_result(statement) == 0 else { throw statementFailure() }
        var rows: [[String?]] = []
        while true {
            let status = mysql_stmt_fetch(statement)
            if status == MYSQL_NO_DATA { break }
            guard status == 0 || status == MYSQL_DATA_TRUNCATED else { throw statementFailure() }
            var values: [String?] = []
            values.reserveCapacity(columns)
            for i in 0..<columns {
                if nulls[i] != 0 { values.append(nil); continue }
                let length = Int(lengths[i])
                if length <= capacity {
                    values.append(String(decoding: UnsafeRawBufferPointer(start: storage + i * capacity, count: length), as: UTF8.self))
                    continue
                }
                let whole = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 1)
                defer { whole.deallocate() }
                var column = MYSQL_BIND()
                column.buffer_type = MYSQL_TYPE_STRING
                column.buffer = whole
                column.buffer_length = UInt(length)
                guard mysql_stmt_fetch_column(statement, &column, UInt32(i), 0) == 0 else { throw statementFailure() }
                values.append(String(decoding: UnsafeRawBufferPointer(start: whole, count: length), as: UTF8.self))
            }
            rows.append(values)
        }
        return rows
    }

    private func failure(code: UInt32, message: String) -> KhoError {
        MariaDBConnection.classify(code: code, message: message).error(detail: message, engine: "mariadb", source: source)
    }

    /// By error number: server errors (1045 login, 1044/1142/1227 privilege, 1049 missing database,
    /// 1205 lock wait) and the connector's (2002/2003 cannot connect, 2006/2013 connection lost).
    static func classify(code: UInt32, message: String) -> ClientFailure {
        switch code {
        case 1045, 1698: return .login
        case 1044, 1142, 1143, 1227: return .privilege
        case 1049: return .noDatabase
        case 1205: return .lockTimeout
        case 2002, 2003, 2005, 2006, 2013: return .unreachable
        default: return ClientFailure.classify(message)
        }
    }
}

private func withOptionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}
