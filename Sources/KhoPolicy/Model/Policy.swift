import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources

/// One agency system's backup rules, read from a YAML file in `policies/`.
public struct Policy: Sendable {
    public var name: String
    public var file: String
    public var agency: String
    public var system: String
    public var securityLevel: Int
    public var schedule: CronSchedule
    public var repository: RepositorySpec
    public var sources: [SourceSpec]
    public var retention: RetentionPolicy
    public var prune: Bool
    public var rpo: TimeInterval
    public var rto: TimeInterval
    public var notify: String?
    public var drills: DrillSpec?
    /// Repositories each good backup is copied to after it is saved (`copies:`), in order.
    public var copies: [CopySpec] = []
    /// Where the name is written (line, column), or where the policy starts when the file name is used.
    public var nameLocation: (line: Int, column: Int) = (1, 1)

    /// The policy's `time-zone` (default Asia/Ho_Chi_Minh): its schedule and retention days are
    /// counted in it, and commands about this policy show times in it (see `DisplayZone`).
    public var timeZone: TimeZone { schedule.timeZone }
}

public struct RepositorySpec: Sendable, Equatable {
    public var path: String
    public var passwordFile: String?
    public var passwordEnv: String?

    /// The repository password from its file or variable.
    public func password() throws -> [UInt8] {
        if let passwordFile {
            guard let data = FileManager.default.contents(atPath: passwordFile) else {
                throw KhoError(.usage, "The repository password file \(passwordFile) cannot be read: check the path and its permissions.")
            }
            var bytes = Array(data)
            while let last = bytes.last, last == 0x0a || last == 0x0d { bytes.removeLast() }
            Secrets.register(String(decoding: bytes, as: UTF8.self))
            return bytes
        }
        if let passwordEnv, let value = ProcessInfo.processInfo.environment[passwordEnv] {
            Secrets.register(value)
            return Array(value.utf8)
        }
        throw KhoError(.usage, "The repository password variable \(passwordEnv ?? "?") is not set.")
    }
}

/// One `copies:` entry: a repository that receives the policy's good backups, with its own
/// retention when it has one (otherwise the policy's applies there too).
public struct CopySpec: Sendable, Equatable {
    public var repository: RepositorySpec
    /// The entry's own `retention:` (keep- rules); nil when it has none.
    public var retention: RetentionPolicy?
    /// The entry's `prune:` (beside `retention:` or inside it); nil when it gives none.
    public var prune: Bool?

    public init(repository: RepositorySpec, retention: RetentionPolicy? = nil, prune: Bool? = nil) {
        self.repository = repository
        self.retention = retention
        self.prune = prune
    }

    public var path: String { repository.path }
    public var passwordFile: String? { repository.passwordFile }
    public var passwordEnv: String? { repository.passwordEnv }
    public func password() throws -> [UInt8] { try repository.password() }
}

extension Policy {
    /// The retention applied on a copy destination, and whether to prune there: the entry's own
    /// `retention:` when it has one, else the policy's (rules and prune); an entry's `prune:`
    /// decides pruning in either case.
    public func retention(for copy: CopySpec) -> (rules: RetentionPolicy, prune: Bool) {
        if let own = copy.retention { return (own, copy.prune ?? false) }
        return (retention, copy.prune ?? prune)
    }
}

public struct DrillSpec: Sendable, Equatable {
    public var every: TimeInterval
    /// The groups of checks whose failure fails a drill (a failed restore always does).
    public var checks: [DrillRequirement]
    /// The period of point-in-time recovery drills of the policy's base-backup sources
    /// (`pitr-every`); nil: they are not drilled by `kho run`.
    public var pitrEvery: TimeInterval?

    public init(every: TimeInterval, checks: [DrillRequirement], pitrEvery: TimeInterval? = nil) {
        self.every = every
        self.checks = checks
        self.pitrEvery = pitrEvery
    }
}

/// A policy file problem, located precisely.
public struct PolicyError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String
    public var description: String { "\(file):\(line):\(column): \(message)" }
}
