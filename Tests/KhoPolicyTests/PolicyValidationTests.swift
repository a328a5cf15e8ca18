import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoPolicy
import Testing

// Policy files: every invalid case produces its exact error, located by file, line and column
// (1-based, as an editor shows them); every problem in a folder is reported, not only the first;
// the example policies shipped in policies/ validate.

/// A valid policy; the cases below change one part of it. Line numbers are given on the right.
private func basePolicy(passwordFile: String, name: String = "registry", repository: String = "/srv/kho/repository",
                        firstSource: String = "db", secondSource: String = "scans") -> String {
    """
    # Sở Tư pháp — hộ tịch điện tử
    # a policy for the tests
    name: \(name)
    agency: Sở Tư pháp tỉnh Quảng Ngãi
    system: Cơ sở dữ liệu hộ tịch
    security-level: 3
    schedule: "30 1 * * *"
    repository:
      path: \(repository)
      password-file: \(passwordFile)
    sources:
      - name: \(firstSource)
        kind: postgres
        databases: [ho_tich]
        password-env: HO_TICH_PG_PASSWORD
      - name: \(secondSource)
        kind: files
        paths: [/srv/scans]
    retention:
      keep-daily: 7
      keep-weekly: 2
    objectives:
      rpo: 24h
      rto: 4h

    """
    // 1 comment, 2 comment, 3 name, 4 agency, 5 system, 6 security-level, 7 schedule, 8 repository,
    // 9 path, 10 password-file, 11 sources, 12 - name db, 13 kind, 14 databases, 15 password-env,
    // 16 - name scans, 17 kind, 18 paths, 19 retention, 20 keep-daily, 21 keep-weekly, 22 objectives,
    // 23 rpo, 24 rto
}

/// A folder of policy files and a readable password file.
private final class Fixture {
    let folder: TemporaryFolder
    let passwordFile: String

    init() throws {
        folder = try TemporaryFolder("policies")
        passwordFile = try folder.write("secrets/repository.pass", "not a real password\n")
    }

    var base: String { basePolicy(passwordFile: passwordFile) }

    /// `base` with `old` (which must occur exactly once) replaced by `new`.
    func variant(_ old: String, _ new: String, sourceLocation: SourceLocation = #_sourceLocation) -> String {
        let parts = base.components(separatedBy: old)
        #expect(parts.count == 2, "the test's base policy should contain \"\(old)\" once", sourceLocation: sourceLocation)
        return parts.joined(separator: new)
    }

    /// The errors for a folder holding exactly `files`, as "file:line:column: message" with the
    /// folder's path removed.
    func errors(_ files: [String: String], checkSecrets: Bool = true) throws -> [String] {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] where name.hasSuffix(".yaml") {
            folder.remove(name)
        }
        for (name, text) in files { try folder.write(name, text) }
        let (_, errors) = PolicyLoader(checkSecrets: checkSecrets).load(directory: folder.path)
        return errors.map { $0.description.replacingOccurrences(of: folder.path + "/", with: "") }
    }

    func errors(_ text: String, checkSecrets: Bool = true) throws -> [String] {
        try errors(["p.yaml": text], checkSecrets: checkSecrets)
    }

    func policies(_ files: [String: String]) throws -> [Policy] {
        for (name, text) in files { try folder.write(name, text) }
        let (policies, errors) = PolicyLoader().load(directory: folder.path)
        #expect(errors.isEmpty, "\(errors)")
        return policies
    }
}

/// Records the whole lists when the errors differ from those expected.
private func expectErrors(_ actual: [String], _ expected: [String], _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
    if actual != expected {
        Issue.record("\(comment)\ngot:\n  \(actual.joined(separator: "\n  "))\nexpected:\n  \(expected.joined(separator: "\n  "))",
                     sourceLocation: sourceLocation)
    }
}

private let policyKeys = "name, agency, system, security-level, schedule, time-zone, repository, sources, retention, objectives, notify, drills, copies"

extension KhoPolicyUnitTests {
@Suite("policy validation")
struct PolicyValidationTests {
    @Test("the base policy of these tests is valid and read as written")
    func baseIsValid() throws {
        let fixture = try Fixture()
        #expect(try fixture.errors(fixture.base) == [])
        let policy = try #require(try fixture.policies(["p.yaml": fixture.base]).first)
        #expect(policy.name == "registry")
        #expect(policy.agency == "Sở Tư pháp tỉnh Quảng Ngãi")
        #expect(policy.securityLevel == 3)
        #expect(policy.schedule.expression == "30 1 * * *")
        #expect(policy.schedule.timeZone.identifier == "Asia/Ho_Chi_Minh")
        #expect(policy.repository.path == "/srv/kho/repository")
        #expect(policy.repository.passwordFile == fixture.passwordFile)
        #expect(policy.repository.passwordEnv == nil)
        #expect(policy.sources.map(\.name) == ["db", "scans"])
        #expect(policy.sources.map(\.kind) == [.postgres, .files])
        #expect(policy.sources[0].databases == ["ho_tich"])
        #expect(policy.sources[0].endpoint?.port == 5432)
        #expect(policy.sources[0].endpoint?.user == "postgres")
        #expect(policy.sources[0].endpoint?.passwordEnv == "HO_TICH_PG_PASSWORD")
        #expect(policy.sources[1].paths == ["/srv/scans"])
        #expect(policy.retention.daily == 7)
        #expect(policy.retention.weekly == 2)
        #expect(policy.retention.timeZone == "Asia/Ho_Chi_Minh")
        #expect(policy.prune == false)
        #expect(policy.rpo == 86400)
        #expect(policy.rto == 4 * 3600)
        #expect(policy.notify == nil)
        #expect(policy.drills == nil)
    }

    @Test("unknown keys, with the closest known key suggested")
    func unknownKeys() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("schedule: \"30 1 * * *\"", "schedul: \"30 1 * * *\"")), [
            "p.yaml:7:1: unknown key \"schedul\" in the policy (did you mean \"schedule\"?); expected one of: \(policyKeys)",
            "p.yaml:3:1: schedule is missing",
        ])
        expectErrors(try f.errors(f.variant("  keep-daily: 7", "  keep-dayly: 7")), [
            "p.yaml:20:3: unknown key \"keep-dayly\" in retention (did you mean \"keep-daily\"?); expected one of: keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly, keep-within, keep-tag, prune",
        ])
        expectErrors(try f.errors(f.variant("    databases: [ho_tich]", "    database: [ho_tich]")), [
            "p.yaml:14:5: unknown key \"database\" in a postgres source (did you mean \"databases\"?); expected one of: name, kind, timeout, min-size-ratio, host, port, user, databases, password-file, password-env, globals, wal-rpo",
            "p.yaml:12:5: a postgres source needs databases",
        ])
        expectErrors(try f.errors(f.variant("  rto: 4h", "  rto: 4h\n  rtp: 1h")), [
            "p.yaml:25:3: unknown key \"rtp\" in objectives (did you mean \"rto\"?); expected one of: rpo, rto",
        ])
        // A key valid for another kind of source is unknown for this one.
        expectErrors(try f.errors(f.variant("    paths: [/srv/scans]", "    paths: [/srv/scans]\n    databases: [x]")), [
            "p.yaml:19:5: unknown key \"databases\" in a files source; expected one of: name, kind, timeout, min-size-ratio, paths, exclude",
        ])
        expectErrors(try f.errors(f.variant("    kind: postgres", "    kind: oracle")), [
            "p.yaml:13:11: unknown source kind \"oracle\"; expected files, postgres, postgres-base, mariadb, sqlite or command",
        ])
        // A snapshot's kind that no policy can name: a policy runs unattended, with no standard input.
        expectErrors(try f.errors(f.variant("    kind: postgres", "    kind: stdin")), [
            "p.yaml:13:11: unknown source kind \"stdin\"; expected files, postgres, postgres-base, mariadb, sqlite or command",
        ])
        // No suggestion when no known key is close: rpo belongs under objectives, it is not a typo of name.
        expectErrors(try f.errors(f.variant("  rto: 4h", "  rto: 4h\nrpo: 24h")), [
            "p.yaml:25:1: unknown key \"rpo\" in the policy; expected one of: \(policyKeys)",
        ])
    }

    @Test("wrong types")
    func wrongTypes() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("security-level: 3", "security-level: high")), [
            "p.yaml:6:17: security-level must be a whole number",
        ])
        expectErrors(try f.errors(f.variant("agency: Sở Tư pháp tỉnh Quảng Ngãi", "agency: [Sở Tư pháp, UBND]")), [
            "p.yaml:4:9: agency must be text",
        ])
        expectErrors(try f.errors(f.variant("  keep-daily: 7", "  keep-daily: [7]")), [
            "p.yaml:20:15: keep-daily must be a whole number",
        ])
        expectErrors(try f.errors(f.variant("  keep-daily: 7", "  keep-daily: 7.5")), [
            "p.yaml:20:15: keep-daily must be a whole number",
        ])
        expectErrors(try f.errors(f.variant("repository:\n  path: /srv/kho/repository\n  password-file: \(f.passwordFile)",
                                       "repository: /srv/kho/repository")), [
            "p.yaml:8:13: repository must be a mapping of keys to values",
        ])
        expectErrors(try f.errors(f.variant("    paths: [/srv/scans]", "    paths: {a: b}")), [
            "p.yaml:18:12: paths must be a list",
            "p.yaml:16:5: a files source needs paths",
        ])
        expectErrors(try f.errors(f.variant("    databases: [ho_tich]", "    databases: [ho_tich]\n    port: http")), [
            "p.yaml:15:11: port must be a whole number",
        ])
        expectErrors(try f.errors(f.variant("    databases: [ho_tich]", "    databases: [ho_tich]\n    port: 70000")), [
            "p.yaml:15:11: port must be between 1 and 65535; got 70000",
        ])
        expectErrors(try f.errors(f.variant("    databases: [ho_tich]", "    databases: [ho_tich]\n    globals: maybe")), [
            "p.yaml:15:14: globals must be true or false",
        ])
        expectErrors(try f.errors(f.variant("    paths: [/srv/scans]", "    paths: [/srv/scans]\n    min-size-ratio: 2")), [
            "p.yaml:19:21: min-size-ratio must be a number from 0.0 to 1.0",
        ])
        expectErrors(try f.errors(f.variant("sources:\n", "sources: all\nnot-sources:\n")), [
            "p.yaml:12:1: unknown key \"not-sources\" in the policy; expected one of: \(policyKeys)",
            "p.yaml:11:10: sources must be a non-empty list",
        ])
        expectErrors(try f.errors(f.variant("  - name: scans\n    kind: files\n", "  - /srv/scans\n  - name: scans2\n    kind: files\n")), [
            "p.yaml:16:5: each source needs kind: files, postgres, postgres-base, mariadb, sqlite or command",
        ])
    }

    @Test("every problem of a policy is reported, prune's type included")
    func everyProblemReported() throws {
        let f = try Fixture()
        // A wrong prune value does not hide the problems found after it.
        expectErrors(try f.errors(f.variant("  keep-weekly: 2\n", "  keep-weekly: 2\n  prune: sometimes\n")
                                .replacingOccurrences(of: "  rpo: 24h", with: "  rpo: soon")), [
            "p.yaml:22:10: prune must be true or false",
            "p.yaml:24:8: rpo must be a duration such as 30m, 24h, 7d or 1w; got \"soon\"",
        ])
        // Problems in several files: all of them.
        expectErrors(try f.errors(["a.yaml": f.variant("security-level: 3", "security-level: 9"),
                              "b.yaml": basePolicy(passwordFile: f.passwordFile, name: "b").replacingOccurrences(of: "  rto: 4h", with: "  rto: 4 hours")]), [
            "a.yaml:6:17: security-level must be between 1 and 5; got 9",
            "b.yaml:24:8: rto must be a duration such as 30m, 24h, 7d or 1w; got \"4 hours\"",
        ])
    }

    @Test("security-level out of range 1–5")
    func securityLevelRange() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("security-level: 3", "security-level: 6")), [
            "p.yaml:6:17: security-level must be between 1 and 5; got 6",
        ])
        expectErrors(try f.errors(f.variant("security-level: 3", "security-level: 0")), [
            "p.yaml:6:17: security-level must be between 1 and 5; got 0",
        ])
        expectErrors(try f.errors(f.variant("security-level: 3", "security-level: -1")), [
            "p.yaml:6:17: security-level must be between 1 and 5; got -1",
        ])
        expectErrors(try f.errors(f.variant("security-level: 3\n", "")), [
            "p.yaml:3:1: security-level is missing (1 to 5)",
        ])
        for level in 1...5 {
            expectErrors(try f.errors(f.variant("security-level: 3", "security-level: \(level)")), [])
        }
    }

    @Test("impossible and malformed schedules, unknown time zones")
    func schedules() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("\"30 1 * * *\"", "\"0 0 31 2 *\"")), [
            "p.yaml:7:11: the schedule \"0 0 31 2 *\" never runs (no such date)",
        ])
        expectErrors(try f.errors(f.variant("\"30 1 * * *\"", "\"0 25 * * *\"")), [
            "p.yaml:7:11: hour \"25\" is out of range 0–23",
        ])
        expectErrors(try f.errors(f.variant("\"30 1 * * *\"", "\"30 1 * *\"")), [
            "p.yaml:7:11: a schedule has 5 fields (minute hour day-of-month month day-of-week), e.g. \"30 1 * * *\"; got 4",
        ])
        expectErrors(try f.errors(f.variant("schedule: \"30 1 * * *\"", "schedule: \"30 1 * * *\"\ntime-zone: Mars/Olympus_Mons")), [
            "p.yaml:8:12: time-zone \"Mars/Olympus_Mons\" is not a known time zone (e.g. Asia/Ho_Chi_Minh)",
        ])
        let utc = try #require(try Fixture().policies(["p.yaml": f.variant("schedule: \"30 1 * * *\"", "schedule: \"30 1 * * *\"\ntime-zone: UTC")]).first)
        #expect(utc.schedule.timeZone.secondsFromGMT() == 0)
        #expect(utc.retention.timeZone == "UTC")
    }

    @Test("bad durations")
    func durations() throws {
        let f = try Fixture()
        let cases: [(String, String, String)] = [
            ("  rpo: 24h", "  rpo: 24", "p.yaml:23:8: rpo must be a duration such as 30m, 24h, 7d or 1w; got \"24\""),
            ("  rpo: 24h", "  rpo: 1y", "p.yaml:23:8: rpo must be a duration such as 30m, 24h, 7d or 1w; got \"1y\""),
            ("  rpo: 24h", "  rpo: 0h", "p.yaml:23:8: rpo must be a duration such as 30m, 24h, 7d or 1w; got \"0h\""),
            ("  rpo: 24h", "  rpo: -5h", "p.yaml:23:8: rpo must be a duration such as 30m, 24h, 7d or 1w; got \"-5h\""),
            ("  rto: 4h", "  rto: 1h30", "p.yaml:24:8: rto must be a duration such as 30m, 24h, 7d or 1w; got \"1h30\""),
            ("  rto: 4h", "  rto: h", "p.yaml:24:8: rto must be a duration such as 30m, 24h, 7d or 1w; got \"h\""),
            ("  keep-weekly: 2", "  keep-weekly: 2\n  keep-within: forever", "p.yaml:22:16: keep-within must be a duration such as 30m, 24h, 7d or 1w; got \"forever\""),
            ("    paths: [/srv/scans]", "    paths: [/srv/scans]\n    timeout: soon", "p.yaml:19:14: timeout must be a duration such as 30m, 24h, 7d or 1w; got \"soon\""),
            ("  rto: 4h", "  rto: 4h\ndrills:\n  every: weekly", "p.yaml:26:10: drills every must be a duration such as 30m, 24h, 7d or 1w; got \"weekly\""),
        ]
        for (old, new, error) in cases {
            expectErrors(try f.errors(f.variant(old, new)), [error], "\(new)")
        }
        // Accepted forms.
        for (text, seconds) in [("90s", 90.0), ("15m", 900), ("1h30m", 5400), ("2d", 172_800), ("2w", 1_209_600), ("1.5h", 5400)] {
            let policy = try #require(try Fixture().policies(["p.yaml": f.variant("  rpo: 24h", "  rpo: \(text)")]).first)
            #expect(policy.rpo == seconds, "rpo: \(text)")
        }
        expectErrors(try f.errors(f.variant("  rto: 4h\n", "")), [
            "p.yaml:23:3: objectives needs rto (how long a restore may take)",
        ])
        expectErrors(try f.errors(f.variant("objectives:\n  rpo: 24h\n  rto: 4h\n", "")), [
            "p.yaml:3:1: objectives is missing (rpo and rto)",
        ])
    }

    @Test("drills: unknown checks, missing period")
    func drills() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("  rto: 4h", "  rto: 4h\ndrills:\n  every: 7d\n  checks: [integrity, speed]")), [
            "p.yaml:27:11: unknown drill check \"speed\"; expected integrity, manifest or rto",
        ])
        expectErrors(try f.errors(f.variant("  rto: 4h", "  rto: 4h\ndrills:\n  checks: [integrity]")), [
            "p.yaml:26:3: drills needs every (e.g. 7d)",
        ])
        let policy = try #require(try Fixture().policies(["p.yaml": f.variant("  rto: 4h", "  rto: 4h\ndrills:\n  every: 14d")]).first)
        #expect(policy.drills?.every == TimeInterval(14 * 86400))
        #expect(policy.drills?.checks == [.integrity, .manifest, .rto])
    }

    @Test("retention that keeps nothing")
    func retentionKeepsNothing() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("  keep-daily: 7\n  keep-weekly: 2\n", "  prune: true\n")), [
            "p.yaml:20:3: retention keeps nothing: give at least one keep- rule",
        ])
    }

    @Test("duplicate policy names across files")
    func duplicatePolicyNames() throws {
        let f = try Fixture()
        let other = basePolicy(passwordFile: f.passwordFile, repository: "/srv/kho/other")
        expectErrors(try f.errors(["a.yaml": f.base, "b.yaml": other]), [
            "b.yaml:3:7: policy name \"registry\" is already used by a.yaml: names must be unique",
        ])
        // Without name:, the file name is the policy name: a clash with it is reported too.
        let unnamed = other.replacingOccurrences(of: "name: registry\n", with: "")
        expectErrors(try f.errors(["a.yaml": f.base.replacingOccurrences(of: "name: registry", with: "name: zz"), "zz.yaml": unnamed]), [
            "zz.yaml:3:1: policy name \"zz\" is already used by a.yaml: names must be unique",
        ])
    }

    @Test("duplicate source names, in a policy and in one repository")
    func duplicateSourceNames() throws {
        let f = try Fixture()
        expectErrors(try f.errors(basePolicy(passwordFile: f.passwordFile, secondSource: "db")), [
            "p.yaml:16:5: source name \"db\" is used twice in this policy",
        ])
        // Two policies backing up a source of the same name into one repository: their snapshots
        // would be one group for retention.
        let second = basePolicy(passwordFile: f.passwordFile, name: "other", firstSource: "land", secondSource: "scans")
        expectErrors(try f.errors(["a.yaml": f.base, "b.yaml": second]), [
            "b.yaml:16:11: source name \"scans\" is already used in the same repository by a.yaml: names must be unique per repository",
        ])
        // In different repositories the same name is fine.
        let elsewhere = basePolicy(passwordFile: f.passwordFile, name: "other", repository: "/srv/kho/other")
        expectErrors(try f.errors(["a.yaml": f.base, "b.yaml": elsewhere]), [])
        // A weekly policy of the same source's base backups: another retention family, so the
        // same name is fine; a second base-backup policy of it is not.
        let weekly = basePolicy(passwordFile: f.passwordFile, name: "weekly", firstSource: "base-of-db", secondSource: "db")
            .replacingOccurrences(of: "    kind: files\n    paths: [/srv/scans]\n", with: "    kind: postgres-base\n")
        expectErrors(try f.errors(["a.yaml": f.base, "b.yaml": weekly]), [])
        let weeklyAgain = weekly.replacingOccurrences(of: "name: weekly", with: "name: weekly-again")
        expectErrors(try f.errors(["a.yaml": f.base, "b.yaml": weekly, "c.yaml": weeklyAgain]), [
            "c.yaml:12:11: source name \"base-of-db\" is already used in the same repository by b.yaml: names must be unique per repository",
            "c.yaml:16:11: source name \"db\" is already used in the same repository by b.yaml: names must be unique per repository",
        ])
    }

    @Test("secrets: missing password files, a password written in the policy")
    func secrets() throws {
        let f = try Fixture()
        expectErrors(try f.errors(f.variant("  password-file: \(f.passwordFile)", "  password-file: /nonexistent/kho.pass")), [
            "p.yaml:10:18: repository password-file /nonexistent/kho.pass does not exist or cannot be read",
        ])
        // On another machine (--skip-secrets) the file is not looked for.
        expectErrors(try f.errors(f.variant("  password-file: \(f.passwordFile)", "  password-file: /nonexistent/kho.pass"), checkSecrets: false), [])
        expectErrors(try f.errors(f.variant("    password-env: HO_TICH_PG_PASSWORD", "    password-file: /nonexistent/pg.pass")), [
            "p.yaml:15:20: source db password-file /nonexistent/pg.pass does not exist or cannot be read",
        ])
        // A password in the repository mapping is refused as an unknown key (and never echoed).
        let withPassword = try f.errors(f.variant("  password-file: \(f.passwordFile)", "  password: hunter2-secret"))
        #expect(withPassword == [
            "p.yaml:10:3: unknown key \"password\" in repository (did you mean \"password-env\"?); expected one of: path, password-file, password-env",
            "p.yaml:9:3: repository needs password-file or password-env (a password is never written in a policy)",
        ])
        #expect(!withPassword.joined().contains("hunter2"))
        let inSource = try f.errors(f.variant("    password-env: HO_TICH_PG_PASSWORD", "    password: hunter2-secret"))
        #expect(inSource == [
            "p.yaml:15:5: unknown key \"password\" in a postgres source (did you mean \"password-env\"?); expected one of: name, kind, timeout, min-size-ratio, host, port, user, databases, password-file, password-env, globals, wal-rpo",
        ])
        #expect(!inSource.joined().contains("hunter2"))
        expectErrors(try f.errors(f.variant("  password-file: \(f.passwordFile)", "  password-file: \(f.passwordFile)\n  password-env: KHO_PASSWORD")), [
            "p.yaml:11:17: repository has both password-file and password-env: give one",
        ])
    }

    @Test("${VAR} expansion: set, defaulted, unset without a default")
    func variables() throws {
        let f = try Fixture()
        try withEnvironment(["KHO_UNIT_SET_PATH": "/srv/từ-biến", "KHO_UNIT_UNSET": nil, "KHO_UNIT_EMPTY": ""]) {
            let set = try #require(try Fixture().policies(["p.yaml": f.variant("  path: /srv/kho/repository", "  path: ${KHO_UNIT_SET_PATH}/repo")]).first)
            #expect(set.repository.path == "/srv/từ-biến/repo")
            let defaulted = try #require(try Fixture().policies(["p.yaml": f.variant("  path: /srv/kho/repository", "  path: ${KHO_UNIT_UNSET:-/var/lib/kho/repo}")]).first)
            #expect(defaulted.repository.path == "/var/lib/kho/repo")
            // An empty value counts as unset, so the default applies.
            let empty = try #require(try Fixture().policies(["p.yaml": f.variant("  path: /srv/kho/repository", "  path: ${KHO_UNIT_EMPTY:-/var/lib/kho/repo}")]).first)
            #expect(empty.repository.path == "/var/lib/kho/repo")
            expectErrors(try f.errors(f.variant("  path: /srv/kho/repository", "  path: ${KHO_UNIT_UNSET}")), [
                "p.yaml:9:9: environment variable KHO_UNIT_UNSET is not set and has no default: set it or write ${KHO_UNIT_UNSET:-default}",
            ])
            // The column is the reference's place in the file, whatever an earlier reference on the
            // same line expanded to.
            expectErrors(try f.errors(f.variant("  path: /srv/kho/repository", "  path: ${KHO_UNIT_SET_PATH}/${KHO_UNIT_UNSET}")), [
                "p.yaml:9:30: environment variable KHO_UNIT_UNSET is not set and has no default: set it or write ${KHO_UNIT_UNSET:-default}",
            ])
            expectErrors(try f.errors(f.variant("  path: /srv/kho/repository", "  path: ${KHO_UNIT_SET_PATH")), [
                "p.yaml:9:9: unclosed ${ in a variable reference",
            ])
            // A reference in a comment is not a value: it is left alone.
            expectErrors(try f.errors(f.variant("# a policy for the tests", "# the port comes from ${KHO_UNIT_UNSET} on each host")), [])
            expectErrors(try f.errors(f.variant("  keep-weekly: 2", "  keep-weekly: 2  # or ${KHO_UNIT_UNSET}")), [])
            // A # inside a value is not a comment: the reference after it is expanded.
            expectErrors(try f.errors(f.variant("    paths: [/srv/scans]", "    paths: [\"/srv/scans#${KHO_UNIT_UNSET}\"]")), [
                "p.yaml:18:25: environment variable KHO_UNIT_UNSET is not set and has no default: set it or write ${KHO_UNIT_UNSET:-default}",
            ])
        }
    }

    @Test("YAML that does not parse, empty files, a folder that is not there")
    func unreadable() throws {
        let f = try Fixture()
        expectErrors(try f.errors(""), ["p.yaml:1:1: is empty: a policy needs at least name, schedule, repository and sources"])
        let broken = try f.errors(f.variant("schedule: \"30 1 * * *\"", "schedule: \"30 1 * * *"))
        #expect(broken.count == 1)
        #expect(broken.first?.hasPrefix("p.yaml:") == true && broken.first?.contains(": YAML syntax: ") == true, "\(broken)")
        #expect(try f.errors(f.variant("sources:\n", "sources:\n\t- x\n")).first?.hasPrefix("p.yaml:12:1: YAML syntax: ") == true)
        expectErrors(try f.errors("- just\n- a list\n"), ["p.yaml:1:1: the policy must be a mapping of keys to values"])
        let (policies, errors) = PolicyLoader().load(directory: f.folder.path + "/missing")
        #expect(policies.isEmpty)
        #expect(errors.map(\.description) == ["\(f.folder.path)/missing:0:0: is not a folder of policy files: check --policies"])
    }

    @Test("the example policies in policies/ validate")
    func examplePolicies() throws {
        let secrets = try TemporaryFolder("secrets")
        let passwordFile = try secrets.write("repository.pass", "a password for the test\n")
        let unset: [String: String?] = ["KHO_REPO": nil, "HO_TICH_PG_HOST": nil, "HO_TICH_PG_PORT": nil, "HO_TICH_PG_USER": nil,
                                        "DAT_DAI_DB_HOST": nil, "DAT_DAI_DB_PORT": nil, "DAT_DAI_DB_USER": nil,
                                        "HO_SO_SCAN_DIR": nil, "VAN_BAN_DB": nil, "KHO_COPY_REPO": nil]
        try withEnvironment(unset.merging(["KHO_REPO_PASSWORD_FILE": passwordFile, "KHO_COPY_PASSWORD_FILE": passwordFile]) { $1 }) {
            let (policies, errors) = PolicyLoader().load(directory: TestPaths.packageRoot + "/policies")
            #expect(errors.isEmpty, "\(errors)")
            #expect(policies.map(\.name).sorted() == ["dat-dai", "ho-so-scan", "ho-tich", "van-ban"])
            for policy in policies {
                #expect(policy.repository.path == "/var/lib/kho/repository")
                #expect(policy.repository.passwordFile == passwordFile)
                #expect(policy.schedule.timeZone.identifier == "Asia/Ho_Chi_Minh")
                #expect(policy.drills != nil, "\(policy.name)")
                #expect(!policy.retention.isEmpty)
            }
            let byName = Dictionary(uniqueKeysWithValues: policies.map { ($0.name, $0) })
            #expect(byName["ho-tich"]?.sources.map(\.kind) == [.postgres])
            #expect(byName["ho-tich"]?.sources.first?.endpoint?.port == 5432)
            #expect(byName["ho-tich"]?.prune == true)
            // Security level 3: the civil registry is copied offsite after each backup.
            #expect(byName["ho-tich"]?.copies.map(\.path) == ["/mnt/offsite/kho"])
            #expect(byName["dat-dai"]?.sources.map(\.kind) == [.mariadb])
            #expect(byName["dat-dai"]?.sources.first?.endpoint?.port == 3306)
            #expect(byName["van-ban"]?.sources.map(\.kind) == [.sqlite])
            #expect(byName["van-ban"]?.sources.first?.sqlitePath == "/srv/qlvb/van-ban.sqlite")
            #expect(byName["van-ban"]?.rpo == TimeInterval(6 * 3600))
            #expect(byName["ho-so-scan"]?.sources.map(\.kind) == [.files])
            #expect(byName["ho-so-scan"]?.sources.first?.paths == ["/srv/ho-so-scan"])
            #expect(byName["ho-so-scan"]?.sources.first?.excludes == ["*.tmp", "~$*", "Thumbs.db"])
            // The variables move the sources and the repository.
            try withEnvironment(["HO_TICH_PG_PORT": "25432", "KHO_REPO": "/tmp/elsewhere"]) {
                let moved = PolicyLoader().load(directory: TestPaths.packageRoot + "/policies")
                #expect(moved.errors.isEmpty)
                #expect(moved.policies.first { $0.name == "ho-tich" }?.sources.first?.endpoint?.port == 25432)
                #expect(moved.policies.allSatisfy { $0.repository.path == "/tmp/elsewhere" })
            }
        }
        // Without the password file the examples name it, precisely.
        try withEnvironment(unset.merging(["KHO_REPO_PASSWORD_FILE": "/nonexistent/kho.pass", "KHO_COPY_PASSWORD_FILE": passwordFile]) { $1 }) {
            let (_, errors) = PolicyLoader().load(directory: TestPaths.packageRoot + "/policies")
            #expect(errors.count == 4)
            #expect(errors.allSatisfy { $0.message == "repository password-file /nonexistent/kho.pass does not exist or cannot be read" && $0.line > 1 && $0.column == 18 },
                    "\(errors)")
        }
    }
}
}
