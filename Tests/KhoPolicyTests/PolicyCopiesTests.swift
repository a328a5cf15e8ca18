import Foundation
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoPolicy
import Testing

// `copies:` in policy files: read as written, and its mistakes located by file, line and column.

extension KhoPolicyUnitTests {
@Suite("policy copies")
struct PolicyCopiesTests {
    /// A valid policy with `copies` from line 9 on, and the policy's own `retention` (when given)
    /// after everything else.
    private func policy(passwordFile: String, copies: String, retention: String = "") -> String {
        """
        name: ban-sao
        agency: Sở Tư pháp
        system: Hộ tịch
        security-level: 3
        schedule: "30 1 * * *"
        repository:
          path: /srv/kho/repository
          password-file: \(passwordFile)
        \(copies)
        sources:
          - name: scans
            kind: files
            paths: [/srv/scans]
        objectives:
          rpo: 24h
          rto: 4h
        \(retention)

        """
    }

    private func load(_ text: String, in folder: TemporaryFolder) throws -> (Policy?, [String]) {
        let file = try folder.write("ban-sao.yaml", text)
        let (policy, errors) = PolicyLoader().load(file: file)
        return (policy, errors.map { $0.description.replacingOccurrences(of: folder.path + "/", with: "") })
    }

    @Test("copies are read in order, with their password file or variable")
    func readsCopies() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
              - path: s3:http://127.0.0.1:9000/kho
                password-env: KHO_COPY_PASSWORD
            """), in: folder)
        #expect(errors.isEmpty, "\(errors)")
        let copies = try #require(policy?.copies)
        #expect(copies.map(\.path) == ["/mnt/second-site", "s3:http://127.0.0.1:9000/kho"])
        #expect(copies.map(\.passwordFile) == [password, nil])
        #expect(copies.map(\.passwordEnv) == [nil, "KHO_COPY_PASSWORD"])
    }

    @Test("a policy without copies has none")
    func noCopies() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: ""), in: folder)
        #expect(errors.isEmpty, "\(errors)")
        #expect(policy?.copies.isEmpty == true)
    }

    @Test("an unknown key in a copies entry is reported at file:line:column, with the closest key")
    func unknownKey() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                pasword-file: \(password)
            """), in: folder)
        #expect(policy == nil)
        #expect(errors == [
            "ban-sao.yaml:11:5: unknown key \"pasword-file\" in a copies entry (did you mean \"password-file\"?); expected one of: path, password-file, password-env, retention, prune",
            "ban-sao.yaml:10:5: copy needs password-file or password-env (a password is never written in a policy)",
        ], "\(errors)")
    }

    @Test("copies mistakes: not a list, no path, the policy's own repository, twice, a missing password file")
    func mistakes() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let notAList = try load(policy(passwordFile: password, copies: "copies: /mnt/second-site"), in: folder).1
        #expect(notAList == ["ban-sao.yaml:9:9: copies must be a non-empty list of repositories, each with path and password-file or password-env"], "\(notAList)")

        let noPath = try load(policy(passwordFile: password, copies: """
            copies:
              - password-env: KHO_COPY_PASSWORD
            """), in: folder).1
        #expect(noPath == ["ban-sao.yaml:10:5: copies path is missing"], "\(noPath)")

        let own = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /srv/kho/repository
                password-env: KHO_COPY_PASSWORD
            """), in: folder).1
        #expect(own == ["ban-sao.yaml:10:11: copies path /srv/kho/repository is the policy's own repository: copy to another one"], "\(own)")

        let twice = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-env: KHO_COPY_PASSWORD
              - path: /mnt/second-site
                password-env: KHO_COPY_PASSWORD
            """), in: folder).1
        #expect(twice == ["ban-sao.yaml:12:11: copies path /mnt/second-site is listed twice"], "\(twice)")

        let missing = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: /nonexistent/copy.pass
            """), in: folder).1
        #expect(missing == ["ban-sao.yaml:11:20: copy password-file /nonexistent/copy.pass does not exist or cannot be read"], "\(missing)")
    }
    @Test("a copy's own retention and prune are read; without them the policy's apply on the destination")
    func copyRetention() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
                retention:
                  keep-daily: 7
                  keep-monthly: 24
                  prune: true
              - path: /mnt/third-site
                password-file: \(password)
              - path: /mnt/fourth-site
                password-file: \(password)
                prune: false
              - path: /mnt/fifth-site
                password-file: \(password)
                retention:
                  keep-last: 3
            """, retention: """
            time-zone: Asia/Bangkok
            retention:
              keep-daily: 7
              keep-weekly: 4
              prune: true
            """), in: folder)
        #expect(errors.isEmpty, "\(errors)")
        let p = try #require(policy)
        #expect(p.copies.count == 4)
        let own = p.retention(for: p.copies[0])
        #expect(own.rules.daily == 7 && own.rules.monthly == 24 && own.rules.weekly == 0 && own.prune)
        #expect(own.rules.timeZone == "Asia/Bangkok", "days are counted in the policy's time zone")
        #expect(p.copies[0].retention != nil && p.copies[0].prune == true)
        let inherited = p.retention(for: p.copies[1])
        #expect(p.copies[1].retention == nil && p.copies[1].prune == nil)
        #expect(inherited.rules == p.retention && inherited.prune, "no retention: the policy's rules and prune")
        let noPrune = p.retention(for: p.copies[2])
        #expect(noPrune.rules == p.retention && !noPrune.prune, "prune: false beside no retention keeps the policy's rules, without prune")
        let ownWithoutPrune = p.retention(for: p.copies[3])
        #expect(ownWithoutPrune.rules.last == 3 && !ownWithoutPrune.prune, "an own retention without prune does not prune, as the policy's")
    }

    @Test("a copy's retention and prune mistakes are reported at file:line:column")
    func copyRetentionMistakes() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let unknown = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
                retention:
                  keep-dayly: 7
            """), in: folder).1
        #expect(unknown == [
            "ban-sao.yaml:13:7: unknown key \"keep-dayly\" in a copy's retention (did you mean \"keep-daily\"?); expected one of: keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly, keep-within, keep-tag, prune",
            "ban-sao.yaml:13:7: a copy's retention keeps nothing: give at least one keep- rule",
        ], "\(unknown)")

        let badValues = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
                retention:
                  keep-monthly: many
                  keep-within: 30
                  keep-daily: 7
                prune: sometimes
            """), in: folder).1
        #expect(badValues == [
            "ban-sao.yaml:13:21: keep-monthly must be a whole number",
            "ban-sao.yaml:14:20: keep-within must be a duration such as 30m, 24h, 7d or 1w; got \"30\"",
            "ban-sao.yaml:16:12: prune must be true or false",
        ], "\(badValues)")

        let notAMapping = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
                retention: keep-daily 7
            """), in: folder).1
        #expect(notAMapping == ["ban-sao.yaml:12:16: a copy's retention must be a mapping of keys to values"], "\(notAMapping)")

        let twice = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
                retention:
                  keep-daily: 7
                  prune: true
                prune: false
            """), in: folder).1
        #expect(twice == ["ban-sao.yaml:15:12: prune is given twice for this copy (here and inside its retention): keep one"], "\(twice)")
    }

    // MARK: which snapshots a run copies to a destination

    private func snapshot(_ id: String, day: Int, hour: Int = 2, tags: [String] = ["policy:ban-sao"]) -> Snapshot {
        var s = Snapshot(time: Date(timeIntervalSince1970: 1_772_400_000 + Double(day) * 86_400 + Double(hour) * 3_600),
                         tree: BlobID.zero, paths: ["/srv/scans"], hostname: "kho-host", username: "root", tags: tags,
                         parent: nil, source: SnapshotSource(kind: "files", name: "scans"), partial: false, summary: nil, manifest: nil)
        s.id = id
        return s
    }

    /// The copy of `s` in the destination: another ID, the same backup.
    private func copy(of s: Snapshot) -> Snapshot {
        var c = s
        c.id = "copy-of-" + (s.id ?? "")
        return c
    }

    @Test("copy plan: without retention every snapshot the destination lacks, oldest first")
    func planCatchesUp() {
        let source = [snapshot("d3", day: 3), snapshot("d1", day: 1), snapshot("d0", day: 0), snapshot("d2", day: 2)]
        let destination = [copy(of: source[2])]
        let plan = PolicyRunner.copyPlan(source: source, destination: destination, rules: RetentionPolicy(), newest: "d3")
        #expect(plan.map(\.id) == ["d1", "d2", "d3"])
        #expect(PolicyRunner.copyPlan(source: source, destination: source.map(copy(of:)), rules: RetentionPolicy(), newest: "d3").isEmpty)
        #expect(PolicyRunner.copyPlan(source: source, destination: [], rules: RetentionPolicy(), newest: nil).map(\.id) == ["d0", "d1", "d2", "d3"],
                "a night without a backup still catches up")
    }

    @Test("copy plan: what the destination's retention would forget is not copied (no copying back every night)")
    func planFollowsRetention() {
        var keepTwo = RetentionPolicy()
        keepTwo.last = 2
        let source = (0..<5).map { snapshot("d\($0)", day: $0) }
        // The destination keeps 2: it has forgotten d0 to d2 and holds d3; d4 is tonight's.
        let plan = PolicyRunner.copyPlan(source: source, destination: [copy(of: source[3])], rules: keepTwo, newest: "d4")
        #expect(plan.map(\.id) == ["d4"])
        // Down for two nights: d2 and d3 are missing, and keep-last 2 keeps d3 and d4.
        let gap = PolicyRunner.copyPlan(source: source, destination: [copy(of: source[1])], rules: keepTwo, newest: "d4")
        #expect(gap.map(\.id) == ["d3", "d4"])
        // A newly added destination gets what its rules keep, not the whole history.
        var dailyAndMonthly = RetentionPolicy()
        dailyAndMonthly.daily = 2
        dailyAndMonthly.monthly = 3
        let history = (0..<70).map { snapshot(String(format: "h%02d", $0), day: $0) }
        let first = PolicyRunner.copyPlan(source: history, destination: [], rules: dailyAndMonthly, newest: "h69")
        let kept = Retention.apply(dailyAndMonthly, to: history.map { ($0.id!, $0.time, $0.tags) }).filter(\.keep).map(\.snapshotID)
        #expect(Set(first.map { $0.id! }) == Set(kept) && first.count < history.count)
        #expect(first.map(\.time) == first.map(\.time).sorted(), "oldest first")
    }

    @Test("copy plan: this run's snapshot is copied even when the rules would not keep it")
    func planAlwaysCopiesTheNewBackup() {
        var tagged = RetentionPolicy()
        tagged.tags = ["monthly"]
        let source = [snapshot("old", day: 0, tags: ["monthly"]), snapshot("new", day: 1)]
        let plan = PolicyRunner.copyPlan(source: source, destination: [], rules: tagged, newest: "new")
        #expect(plan.map(\.id) == ["old", "new"])
    }
}
}
