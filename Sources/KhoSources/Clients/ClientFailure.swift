import Foundation
import KhoSupport

/// What went wrong between kho and a database server, in the terms of what the administrator
/// should do about it. The clients classify by the server's or library's error code where there is
/// one, and by the library's message otherwise (libpq reports connection failures as text only).
enum ClientFailure: Sendable, Equatable {
    case login, noPassword, privilege, lockTimeout, noDatabase, unreachable, other

    /// Classifies a message by the phrases both engines' libraries use.
    static func classify(_ text: String) -> ClientFailure {
        let lower = text.lowercased()
        if lower.contains("password authentication failed") || lower.contains("access denied for user") { return .login }
        if lower.contains("no password supplied") { return .noPassword }
        if lower.contains("access denied; you need") || lower.contains("command denied") || lower.contains("permission denied") {
            return .privilege
        }
        if lower.contains("lock wait timeout exceeded") { return .lockTimeout }
        if lower.contains("does not exist") && lower.contains("database") || lower.contains("unknown database") { return .noDatabase }
        if lower.contains("connection refused") || lower.contains("could not connect") || lower.contains("can't connect")
            || lower.contains("no such file or directory") && lower.contains("socket") || lower.contains("timeout expired") || lower.contains("timed out")
            || lower.contains("server closed the connection") || lower.contains("server has gone away") || lower.contains("lost connection") {
            return .unreachable
        }
        return .other
    }

    /// One sentence that names the source and the likely fix; `detail` is the library's message
    /// (masked: a server may echo what it was sent).
    func error(detail rawDetail: String, engine: String, source: String) -> KhoError {
        let lines = Secrets.mask(rawDetail).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let detail = lines.first { !$0.isEmpty } ?? "no error message"
        switch self {
        case .login:
            return KhoError(.source, "Source \(source): the server refused the login (\(detail)): check the user and the password file or variable.")
        case .noPassword:
            return KhoError(.source, "Source \(source): the server asks for a password and none was given (\(detail)): give it with a password file or environment variable.")
        case .privilege:
            return KhoError(.source, "Source \(source): the \(engine) user lacks a privilege (\(detail)): grant it, or use a user that has it.")
        case .lockTimeout:
            return KhoError(.source, "Source \(source): \(engine) gave up waiting for a lock (\(detail)): another session holds the tables (a long query, LOCK TABLES or a schema change); run the backup again once it is done.", retryable: true)
        case .noDatabase:
            return KhoError(.source, "Source \(source): the database does not exist (\(detail)): check the database name.")
        case .unreachable:
            return KhoError(.source, "Source \(source): the \(engine) server cannot be reached (\(detail)): check host and port and that the server runs.", retryable: true)
        case .other:
            return KhoError(.source, "Source \(source): \(engine) reported an error: \(detail)")
        }
    }
}

/// Identifier quoting by each engine's rules: the name is always one identifier, whatever it holds.
package enum SQLIdentifier {
    /// PostgreSQL (and SQLite): double quotes, a double quote doubled.
    package static func postgres(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// MariaDB: backquotes, a backquote doubled.
    package static func mariadb(_ name: String) -> String {
        "`" + name.replacingOccurrences(of: "`", with: "``") + "`"
    }
}
