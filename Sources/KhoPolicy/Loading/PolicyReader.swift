import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import Yams

/// Walks a YAML node tree and builds a policy, collecting located errors.
struct PolicyReader {
    let file: String
    let checkSecrets: Bool
    var errors: [PolicyError] = []

    init(file: String, checkSecrets: Bool) {
        self.file = file
        self.checkSecrets = checkSecrets
    }

    static func yamlError(_ error: YamlError, file: String) -> PolicyError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
            return PolicyError(file: file, line: mark.line, column: mark.column, message: "YAML syntax: \(problem)")
        default:
            return PolicyError(file: file, line: 1, column: 1, message: "YAML: \(error)")
        }
    }

    mutating func fail(_ node: Yams.Node?, _ message: String) {
        let mark = node?.mark
        errors.append(PolicyError(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message))
    }

    /// The mapping's entries, after reporting keys that are not in `allowed`.
    mutating func mapping(_ node: Yams.Node, _ what: String, allowed: [String]) -> [String: Yams.Node]? {
        guard let mapping = node.mapping else {
            fail(node, "\(what) must be a mapping of keys to values")
            return nil
        }
        var result: [String: Yams.Node] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { fail(key, "keys in \(what) must be text"); continue }
            if !allowed.contains(name) {
                let suggestion = PolicyReader.closest(to: name, in: allowed).map { " (did you mean \"\($0)\"?)" } ?? ""
                fail(key, "unknown key \"\(name)\" in \(what)\(suggestion); expected one of: \(allowed.joined(separator: ", "))")
                continue
            }
            if result[name] != nil { fail(key, "key \"\(name)\" appears twice in \(what)") }
            result[name] = value
        }
        return result
    }

    /// The known key closest to an unknown one, when it is close enough to be a likely typo (or
    /// begins with it, as password-file begins with password).
    static func closest(to name: String, in allowed: [String]) -> String? {
        guard let best = allowed.min(by: { distance($0, name) < distance($1, name) }) else { return nil }
        if distance(best, name) <= max(2, name.count / 3) { return best }
        return allowed.filter { $0.hasPrefix(name) || name.hasPrefix($0) }.min { distance($0, name) < distance($1, name) }
    }

    /// A missing required value is reported where the mapping that should hold it is (`parent`).
    mutating func string(_ node: Yams.Node?, _ what: String, required: Bool = true, in parent: Yams.Node? = nil) -> String? {
        guard let node else {
            if required { fail(parent, "\(what) is missing") }
            return nil
        }
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
            fail(node, "\(what) must be text")
            return nil
        }
        return scalar.string
    }

    mutating func int(_ node: Yams.Node?, _ what: String, range: ClosedRange<Int>) -> Int? {
        guard let node else { return nil }
        guard let text = node.scalar?.string, let value = Int(text) else {
            fail(node, "\(what) must be a whole number")
            return nil
        }
        guard range.contains(value) else {
            fail(node, "\(what) must be between \(range.lowerBound) and \(range.upperBound); got \(value)")
            return nil
        }
        return value
    }

    mutating func double(_ node: Yams.Node?, _ what: String, range: ClosedRange<Double>) -> Double? {
        guard let node else { return nil }
        guard let text = node.scalar?.string, let value = Double(text), range.contains(value) else {
            fail(node, "\(what) must be a number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    mutating func duration(_ node: Yams.Node?, _ what: String) -> TimeInterval? {
        guard let node else { return nil }
        guard let text = node.scalar?.string, let value = PolicyReader.parseDuration(text), value > 0 else {
            fail(node, "\(what) must be a duration such as 30m, 24h, 7d or 1w; got \"\(node.scalar?.string ?? "?")\"")
            return nil
        }
        return value
    }

    /// Policy durations need a unit (`24h`, not `86400`), so that a bare number is not mistaken.
    static func parseDuration(_ text: String) -> TimeInterval? {
        guard Double(text) == nil else { return nil }
        return DurationFormat.parse(text)
    }

    mutating func strings(_ node: Yams.Node?, _ what: String) -> [String]? {
        guard let node else { return nil }
        if let scalar = node.scalar { return [scalar.string] }
        guard let sequence = node.sequence else {
            fail(node, "\(what) must be a list")
            return nil
        }
        var result: [String] = []
        for item in sequence {
            guard let text = item.scalar?.string, !text.isEmpty else { fail(item, "items of \(what) must be text"); continue }
            result.append(text)
        }
        return result
    }

    mutating func secret(_ map: [String: Yams.Node], _ what: String, required: Bool, in parent: Yams.Node? = nil) -> (file: String?, env: String?) {
        let file = string(map["password-file"], "\(what) password-file", required: false)
        let env = string(map["password-env"], "\(what) password-env", required: false)
        if file != nil && env != nil {
            fail(map["password-env"], "\(what) has both password-file and password-env: give one")
        }
        if required && file == nil && env == nil {
            fail(parent, "\(what) needs password-file or password-env (a password is never written in a policy)")
        }
        if let file, checkSecrets, !FileManager.default.isReadableFile(atPath: file) {
            fail(map["password-file"], "\(what) password-file \(file) does not exist or cannot be read")
        }
        return (file, env)
    }

    mutating func policy(_ node: Yams.Node, defaultName: String) -> Policy? {
        guard let map = mapping(node, "the policy", allowed: ["name", "agency", "system", "security-level", "schedule", "time-zone",
                                                               "repository", "sources", "retention", "objectives", "notify", "drills", "copies"]) else { return nil }
        let name = string(map["name"], "name", required: false) ?? defaultName
        let agency = string(map["agency"], "agency", in: node) ?? ""
        let system = string(map["system"], "system", in: node) ?? ""
        let level = int(map["security-level"], "security-level", range: 1...5)
        if map["security-level"] == nil { fail(node, "security-level is missing (1 to 5)") }
        let zoneName = string(map["time-zone"], "time-zone", required: false) ?? DisplayZone.defaultIdentifier
        let zone = TimeZone(identifier: zoneName)
        if zone == nil { fail(map["time-zone"], "time-zone \"\(zoneName)\" is not a known time zone (e.g. Asia/Ho_Chi_Minh)") }
        var schedule: CronSchedule?
        if let text = string(map["schedule"], "schedule", in: node), let zone {
            do { schedule = try CronSchedule(text, timeZone: zone) } catch let error as CronSchedule.ParseError { fail(map["schedule"], error.message) } catch {}
        }
        var repository: RepositorySpec?
        if let repoNode = map["repository"], let repo = mapping(repoNode, "repository", allowed: ["path", "password-file", "password-env"]) {
            let path = string(repo["path"], "repository path", in: repoNode)
            let secret = secret(repo, "repository", required: true, in: repoNode)
            if let path { repository = RepositorySpec(path: path, passwordFile: secret.file, passwordEnv: secret.env) }
        } else if map["repository"] == nil {
            fail(node, "repository is missing (path and password-file or password-env)")
        }
        var sources: [SourceSpec] = []
        if let list = map["sources"] {
            if let items = list.sequence, !items.isEmpty {
                var seen = Set<String>()
                for item in items {
                    if let source = source(item) {
                        if !seen.insert(source.name).inserted { fail(item, "source name \"\(source.name)\" is used twice in this policy") }
                        sources.append(source)
                    }
                }
            } else {
                fail(list, "sources must be a non-empty list")
            }
        } else {
            fail(node, "sources is missing: list what to back up")
        }
        var retention = RetentionPolicy()
        var prune = false
        if let retentionNode = map["retention"], let read = self.retention(retentionNode, "retention", timeZone: zoneName) {
            retention = read.rules
            prune = read.prune ?? false
        }
        var rpo: TimeInterval?
        var rto: TimeInterval?
        if let objectivesNode = map["objectives"], let o = mapping(objectivesNode, "objectives", allowed: ["rpo", "rto"]) {
            rpo = duration(o["rpo"], "rpo")
            rto = duration(o["rto"], "rto")
            if o["rpo"] == nil { fail(objectivesNode, "objectives needs rpo (how old the newest good backup may be)") }
            if o["rto"] == nil { fail(objectivesNode, "objectives needs rto (how long a restore may take)") }
        } else {
            fail(node, "objectives is missing (rpo and rto)")
        }
        var drills: DrillSpec?
        if let drillNode = map["drills"], let d = mapping(drillNode, "drills", allowed: ["every", "checks", "pitr-every"]) {
            let every = duration(d["every"], "drills every")
            if d["every"] == nil { fail(drillNode, "drills needs every (e.g. 7d)") }
            let names = strings(d["checks"], "drills checks") ?? DrillRequirement.all.map(\.rawValue)
            var checks: [DrillRequirement] = []
            for name in names {
                if let check = DrillRequirement(rawValue: name) {
                    checks.append(check)
                } else {
                    fail(d["checks"], "unknown drill check \"\(name)\"; expected integrity, manifest or rto")
                }
            }
            let pitrEvery = d["pitr-every"] == nil ? nil : duration(d["pitr-every"], "drills pitr-every")
            if let every { drills = DrillSpec(every: every, checks: checks, pitrEvery: pitrEvery) }
        }
        let copySpecs = self.copies(map["copies"], repository: repository, timeZone: zoneName)
        let notify = string(map["notify"], "notify", required: false)
        guard errors.isEmpty, let level, let schedule, let repository, let rpo, let rto else { return nil }
        let nameMark = (map["name"] ?? node).mark
        return Policy(name: name, file: file, agency: agency, system: system, securityLevel: level, schedule: schedule,
                      repository: repository, sources: sources, retention: retention, prune: prune, rpo: rpo, rto: rto,
                      notify: notify, drills: drills, copies: copySpecs, nameLocation: (nameMark?.line ?? 1, nameMark?.column ?? 1))
    }

    /// A `retention:` mapping (the policy's or a copy's): keep- rules counted in `timeZone`, and
    /// `prune` when given. Nil when the node is not a mapping.
    mutating func retention(_ node: Yams.Node, _ what: String, timeZone: String) -> (rules: RetentionPolicy, prune: Bool?)? {
        guard let r = mapping(node, what, allowed: ["keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within", "keep-tag", "prune"]) else {
            return nil
        }
        var retention = RetentionPolicy()
        var prune: Bool?
        retention.last = int(r["keep-last"], "keep-last", range: 0...100_000) ?? 0
        retention.hourly = int(r["keep-hourly"], "keep-hourly", range: 0...100_000) ?? 0
        retention.daily = int(r["keep-daily"], "keep-daily", range: 0...100_000) ?? 0
        retention.weekly = int(r["keep-weekly"], "keep-weekly", range: 0...100_000) ?? 0
        retention.monthly = int(r["keep-monthly"], "keep-monthly", range: 0...100_000) ?? 0
        retention.yearly = int(r["keep-yearly"], "keep-yearly", range: 0...100_000) ?? 0
        retention.within = duration(r["keep-within"], "keep-within")
        retention.tags = strings(r["keep-tag"], "keep-tag") ?? []
        if let p = r["prune"] {
            if let value = p.bool { prune = value } else { fail(p, "prune must be true or false") }
        }
        if retention.isEmpty { fail(node, "\(what) keeps nothing: give at least one keep- rule") }
        retention.timeZone = timeZone
        return (retention, prune)
    }

    /// `copies:`: a non-empty list of repositories (the keys of `repository`), none of them the
    /// policy's own repository and none listed twice; each may have its own `retention:` (as the
    /// policy's) and `prune:`.
    mutating func copies(_ node: Yams.Node?, repository: RepositorySpec?, timeZone: String) -> [CopySpec] {
        guard let node else { return [] }
        guard let items = node.sequence, !items.isEmpty else {
            fail(node, "copies must be a non-empty list of repositories, each with path and password-file or password-env")
            return []
        }
        var result: [CopySpec] = []
        for item in items {
            guard let entry = mapping(item, "a copies entry", allowed: ["path", "password-file", "password-env", "retention", "prune"]) else { continue }
            let path = string(entry["path"], "copies path", in: item)
            let secret = secret(entry, "copy", required: true, in: item)
            var ownRetention: RetentionPolicy?
            var prune: Bool?
            if let retentionNode = entry["retention"], let read = retention(retentionNode, "a copy's retention", timeZone: timeZone) {
                ownRetention = read.rules
                prune = read.prune
            }
            if let p = entry["prune"] {
                if let value = p.bool {
                    if prune != nil {
                        fail(p, "prune is given twice for this copy (here and inside its retention): keep one")
                    }
                    prune = value
                } else {
                    fail(p, "prune must be true or false")
                }
            }
            guard let path else { continue }
            if let repository, repository.path == path {
                fail(entry["path"], "copies path \(path) is the policy's own repository: copy to another one")
            } else if result.contains(where: { $0.path == path }) {
                fail(entry["path"], "copies path \(path) is listed twice")
            } else {
                result.append(CopySpec(repository: RepositorySpec(path: path, passwordFile: secret.file, passwordEnv: secret.env),
                                       retention: ownRetention, prune: prune))
            }
        }
        return result
    }

    mutating func source(_ node: Yams.Node) -> SourceSpec? {
        let common = ["name", "kind", "timeout", "min-size-ratio"]
        guard let kindNode = node.mapping?["kind"], let kindText = kindNode.scalar?.string else {
            fail(node, "each source needs kind: files, postgres, postgres-base, mariadb, sqlite or command")
            return nil
        }
        guard let kind = SourceSpec.Kind(rawValue: kindText), SourceKind.policyKinds.contains(kind) else {
            fail(kindNode, "unknown source kind \"\(kindText)\"; expected files, postgres, postgres-base, mariadb, sqlite or command")
            return nil
        }
        let specific: [String]
        switch kind {
        case .files: specific = ["paths", "exclude"]
        case .postgres: specific = ["host", "port", "user", "databases", "password-file", "password-env", "globals", "wal-rpo"]
        case .mariadb: specific = ["host", "port", "user", "databases", "password-file", "password-env", "wal-rpo"]
        case .sqlite: specific = ["path"]
        case .command: specific = ["command", "restore-command"]
        case .postgresBase: specific = ["host", "port", "user", "database", "password-file", "password-env", "checkpoint", "wal-rpo"]
        case .stdin: return nil  // refused above: not among SourceKind.policyKinds
        }
        guard let map = mapping(node, "a \(kind.rawValue) source", allowed: common + specific) else { return nil }
        guard let name = string(map["name"], "source name", in: node) else { return nil }
        var spec = SourceSpec(name: name, kind: kind)
        if let mark = map["name"]?.mark { spec.nameLocation = (mark.line, mark.column) }
        spec.limits.timeout = duration(map["timeout"], "timeout")
        spec.limits.minSizeRatio = double(map["min-size-ratio"], "min-size-ratio", range: 0...1) ?? 0.5
        spec.walRPO = duration(map["wal-rpo"], "wal-rpo")
        switch kind {
        case .files:
            spec.paths = strings(map["paths"], "paths") ?? []
            if spec.paths.isEmpty { fail(node, "a files source needs paths") }
            spec.excludes = strings(map["exclude"], "exclude") ?? []
        case .postgres, .mariadb:
            let host = string(map["host"], "host", required: false) ?? "127.0.0.1"
            let port = int(map["port"], "port", range: 1...65535) ?? (kind == .postgres ? 5432 : 3306)
            let user = string(map["user"], "user", required: false) ?? (kind == .postgres ? "postgres" : "root")
            spec.databases = strings(map["databases"], "databases") ?? []
            if spec.databases.isEmpty { fail(node, "a \(kind.rawValue) source needs databases") }
            let secret = secret(map, "source \(name)", required: false, in: node)
            spec.endpoint = DatabaseEndpoint(host: host, port: port, user: user, database: spec.databases.first ?? "",
                                             passwordFile: secret.file, passwordEnv: secret.env)
            if let g = map["globals"] {
                if let value = g.bool { spec.globals = value } else { fail(g, "globals must be true or false") }
            }
        case .sqlite:
            spec.sqlitePath = string(map["path"], "path", in: node)
        case .command:
            spec.command = string(map["command"], "command", in: node)
            spec.restoreCommand = string(map["restore-command"], "restore-command", required: false)
        case .postgresBase:
            // A base backup copies the whole cluster: `database` is only where kho runs its own
            // queries (tablespaces, settings), and the login needs REPLICATION.
            let secret = secret(map, "source \(name)", required: false, in: node)
            spec.endpoint = DatabaseEndpoint(host: string(map["host"], "host", required: false) ?? "127.0.0.1",
                                             port: int(map["port"], "port", range: 1...65535) ?? 5432,
                                             user: string(map["user"], "user", required: false) ?? "postgres",
                                             database: string(map["database"], "database", required: false) ?? "postgres",
                                             passwordFile: secret.file, passwordEnv: secret.env)
            if let text = string(map["checkpoint"], "checkpoint", required: false) {
                if let checkpoint = PostgresBaseBackup.Checkpoint(rawValue: text) {
                    spec.checkpoint = checkpoint
                } else {
                    fail(map["checkpoint"]!, "checkpoint must be fast or spread")
                }
            }
        case .stdin: return nil
        }
        return spec
    }
}

/// Edit distance, for "did you mean".
func distance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var previous = row[0]
        row[0] = i
        for j in 1...max(b.count, 1) where !b.isEmpty {
            let old = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
            previous = old
        }
    }
    return row[b.count]
}
