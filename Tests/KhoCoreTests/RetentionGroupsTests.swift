import Foundation
import Testing
import KhoCore
import KhoSupport

// Which snapshots retention rules count together. `kho forget` used to key files snapshots by
// their paths and everything else by kind and name, while a policy's retention counted one host's
// snapshots of one source name: the same repository, the same rules, two different answers.

private func snapshot(_ id: String, _ day: Int, kind: String = "files", name: String? = nil, paths: [String] = ["/srv/data"],
                      host: String = "kho-1", tags: [String] = []) -> Snapshot {
    var s = Snapshot(time: Timestamp.parse(String(format: "2026-11-%02dT02:00:00+07:00", day))!, tree: BlobID(w0: 0, w1: 0, w2: 0, w3: 0),
                     paths: paths, hostname: host, username: "root", tags: tags, parent: nil,
                     source: SnapshotSource(kind: kind, name: name), partial: false, summary: nil, manifest: nil)
    s.id = id
    return s
}

private func keepLast(_ n: Int) -> RetentionPolicy {
    var policy = RetentionPolicy()
    policy.last = n
    return policy
}

@Suite struct RetentionGroupsTests {
    @Test("a policy's files source whose paths changed stays one group: keep-last 2 keeps two, not two per path list")
    func pathsChangedUnderOneName() {
        // The policy backed up /srv/data, then /srv/data and /srv/scans under the same name.
        let all = [
            snapshot("a1", 1, name: "documents"), snapshot("a2", 2, name: "documents"), snapshot("a3", 3, name: "documents"),
            snapshot("b4", 4, name: "documents", paths: ["/srv/scans", "/srv/data"]),
            snapshot("b5", 5, name: "documents", paths: ["/srv/data", "/srv/scans"]),
        ]
        let groups = RetentionGroups.group(all)
        #expect(groups.count == 1, "the old rule made two groups: [/srv/data] and [/srv/data /srv/scans]")
        let kept = groups.flatMap { $0.decisions(keepLast(2)) }.filter(\.keep).map(\.snapshotID)
        #expect(Set(kept) == ["b4", "b5"], "the old rule also kept a2 and a3 forever: \(kept)")
        // What the policy runner counts for the source is the same group.
        #expect(RetentionGroups.group(of: "documents", host: "kho-1", in: all).snapshots.map(\.id) == all.map(\.id))
        #expect(groups[0].label == "files:documents")
    }

    @Test("two named sources over the same paths stay apart: one's rules never remove the other's snapshots")
    func samePathsTwoNames() {
        let all = [
            snapshot("h1", 1, name: "scans-hourly"), snapshot("n1", 1, name: "scans-nightly"),
            snapshot("h2", 2, name: "scans-hourly"), snapshot("n2", 2, name: "scans-nightly"),
        ]
        let groups = RetentionGroups.group(all)
        #expect(groups.map(\.sourceName) == ["scans-hourly", "scans-nightly"], "the old rule merged them by their paths")
        let kept = groups.flatMap { $0.decisions(keepLast(1)) }.filter(\.keep).map(\.snapshotID)
        #expect(Set(kept) == ["h2", "n2"])
    }

    @Test("a source moved from a command to a database dump under its name is one group, as restore --source sees it")
    func kindChangedUnderOneName() {
        let all = [snapshot("c1", 1, kind: "command", name: "payroll", paths: ["payroll.sql"]),
                   snapshot("p2", 2, kind: "postgres", name: "payroll", paths: ["payroll.sql"])]
        let groups = RetentionGroups.group(all)
        #expect(groups.count == 1 && groups[0].label == "postgres:payroll")
    }

    @Test("unnamed backups of paths group by host and sorted paths; tags only with byTags")
    func unnamedPathsHostsAndTags() {
        let all = [
            snapshot("x1", 1, paths: ["/b", "/a"]), snapshot("x2", 2, paths: ["/a", "/b"], tags: ["monthly"]),
            snapshot("y1", 1, paths: ["/a"]), snapshot("z1", 1, paths: ["/a", "/b"], host: "kho-2"),
        ]
        let plain = RetentionGroups.group(all)
        #expect(plain.map { $0.snapshots.map(\.id!) } == [["x1", "x2"], ["y1"], ["z1"]])
        #expect(plain[0].label == "/a /b" && plain[2].host == "kho-2" && plain[0].tags == nil)
        let tagged = RetentionGroups.group(all, byTags: true)
        #expect(tagged.map { $0.snapshots.map(\.id!) } == [["x1"], ["y1"], ["z1"], ["x2"]])
        #expect(tagged[3].tags == ["monthly"])
    }

    @Test("a source's base backups and its dumps are kept by separate rules, though they share its name")
    func physicalFamily() {
        let all = [snapshot("d1", 1, kind: "postgres", name: "ho-tich", paths: ["ho_tich.sql"]),
                   snapshot("b1", 1, kind: "postgres-base", name: "ho-tich", paths: ["data"]),
                   snapshot("d2", 2, kind: "postgres", name: "ho-tich", paths: ["ho_tich.sql"]),
                   snapshot("d3", 3, kind: "postgres", name: "ho-tich", paths: ["ho_tich.sql"])]
        let groups = RetentionGroups.group(all)
        #expect(groups.map { $0.snapshots.map(\.id!) } == [["b1"], ["d1", "d2", "d3"]])
        #expect(groups.map(\.family) == [.physical, .logical] && groups[0].label == "postgres-base:ho-tich")
        // keep-last 1 for the dumps does not forget the only base backup, nor does it count as one.
        let kept = groups.flatMap { $0.decisions(keepLast(1)) }.filter(\.keep).map(\.snapshotID)
        #expect(Set(kept) == ["d3", "b1"])
        #expect(RetentionGroups.group(of: "ho-tich", host: "kho-1", in: all).snapshots.map(\.id!) == ["d1", "d2", "d3"])
        #expect(RetentionGroups.group(of: "ho-tich", host: "kho-1", family: .physical, in: all).snapshots.map(\.id!) == ["b1"])
    }

    @Test("a source without snapshots on this host is an empty group")
    func emptyGroup() {
        let group = RetentionGroups.group(of: "documents", host: "kho-2", in: [snapshot("a1", 1, name: "documents")])
        #expect(group.snapshots.isEmpty && group.decisions(keepLast(1)).isEmpty)
    }
}
