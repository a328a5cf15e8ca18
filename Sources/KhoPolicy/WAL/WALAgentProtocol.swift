import Foundation
import KhoCore
import KhoSupport

/// What the WAL agent answers a `kho wal push`.
public enum WALAgentAnswer: Sendable, Equatable {
    /// The file is durably archived (now, earlier by read-ahead, or before with the same bytes).
    case ok(String)
    /// The archive refused the file (another cluster, different content under the name, not a
    /// valid WAL file): PostgreSQL must not be told it is archived.
    case refused(String)
    /// Not archived this time (storage failing, agent stopping): PostgreSQL retries.
    case failed(String)
    /// The caller may not push: its uid is neither the data directory's owner nor root.
    case denied(String)
    /// No agent answered (not running, not listening at that path, timed out).
    case unavailable(String)

    public var message: String {
        switch self {
        case .ok(let m), .refused(let m), .failed(let m), .denied(let m), .unavailable(let m): return m
        }
    }

    /// The exit code of `kho wal push`: 0 archived; 12 refused, which PostgreSQL retries too
    /// (every code is at most 125, so its archiver is never restarted); 1 for everything that
    /// may pass by itself.
    public var exitCode: KhoExitCode {
        switch self {
        case .ok: return .success
        case .refused: return .integrity
        case .failed, .denied, .unavailable: return .failure
        }
    }
}

/// The wire format between `kho wal push` and the agent: one sequenced packet each way.
///
/// Request: `KWP1`, one byte of name length, the WAL file's name (`%f`), and the file's open
/// descriptor as `SCM_RIGHTS` control data. Answer: `KWA1`, one byte of outcome, a UTF-8 message.
enum WALAgentProtocol {
    static let requestMagic = Array("KWP1".utf8)
    static let answerMagic = Array("KWA1".utf8)
    static let requestLimit = 4 + 1 + 64
    static let answerLimit = 16 << 10

    private enum Code: UInt8 {
        case ok = 0, refused = 1, failed = 2, denied = 3
    }

    static func request(name: WALFileName) -> [UInt8] {
        let bytes = Array(name.description.utf8)
        return requestMagic + [UInt8(bytes.count)] + bytes
    }

    /// The file name a request carries, checked as PostgreSQL names archived files.
    static func parseRequest(_ bytes: [UInt8]) throws -> WALFileName {
        guard bytes.count >= 5, Array(bytes[0..<4]) == requestMagic, Int(bytes[4]) == bytes.count - 5 else {
            throw KhoError(.usage, "The request is not a kho wal push request: run kho wal push of the same version as kho wal serve.")
        }
        return try WALFileName(parsing: String(decoding: bytes[5...], as: UTF8.self))
    }

    static func answer(_ answer: WALAgentAnswer) -> [UInt8] {
        let code: Code
        switch answer {
        case .ok: code = .ok
        case .refused: code = .refused
        case .failed, .unavailable: code = .failed
        case .denied: code = .denied
        }
        var text = Array(answer.message.utf8)
        if text.count > answerLimit - 5 { text = Array(text.prefix(answerLimit - 5)) }
        return answerMagic + [code.rawValue] + text
    }

    static func parseAnswer(_ bytes: [UInt8]) -> WALAgentAnswer {
        guard bytes.count >= 5, Array(bytes[0..<4]) == answerMagic, let code = Code(rawValue: bytes[4]) else {
            return .failed("The WAL agent's answer is not one kho understands: run kho wal push of the same version as kho wal serve.")
        }
        let message = String(decoding: bytes[5...], as: UTF8.self)
        switch code {
        case .ok: return .ok(message)
        case .refused: return .refused(message)
        case .failed: return .failed(message)
        case .denied: return .denied(message)
        }
    }
}

/// Where a source's agent listens and keeps its state. Source names come from policies and
/// command lines: they are encoded into one safe path component, never joined as given.
public enum WALAgentPaths {
    public static let socketFolder = "/run/kho/wal"
    public static let stateFolder = "/var/lib/kho/wal"

    /// `/run/kho/wal/<source>.sock`.
    public static func socket(source: String) throws -> String {
        socketFolder + "/" + (try component(source)) + ".sock"
    }

    /// `<state>/<source>.pushed`: the names and SHA-256 of files the agent pushed.
    public static func ledger(source: String, stateDirectory: String) throws -> String {
        stateDirectory + "/" + (try component(source)) + ".pushed"
    }

    /// `<state>/<source>.status.json`: what `kho status` reads of the agent.
    public static func status(source: String, stateDirectory: String) throws -> String {
        stateDirectory + "/" + (try component(source)) + ".status.json"
    }

    /// The source's name as one path component: letters, digits, `-`, `_` and inner `.` as they
    /// are; every other byte (and a leading dot) as `%XX`, so that distinct names stay distinct.
    public static func component(_ source: String) throws -> String {
        let bytes = Array(source.utf8)
        guard !bytes.isEmpty, bytes.count <= 200 else {
            throw KhoError(.usage, "The source name must be 1 to 200 bytes: pass the policy source's name with --source.")
        }
        var out = ""
        for (index, byte) in bytes.enumerated() {
            let plain = (0x30...0x39).contains(byte) || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || (byte == UInt8(ascii: ".") && index > 0)
            out += plain ? String(UnicodeScalar(byte)) : String(format: "%%%02X", byte)
        }
        guard out.utf8.count <= 80 else {
            throw KhoError(.usage, "The source name \(out.prefix(40))… is too long for a socket's name: pass --socket PATH (and the same --socket to kho wal push).")
        }
        return out
    }
}
