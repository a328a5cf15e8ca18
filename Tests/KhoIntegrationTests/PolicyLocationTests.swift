import Foundation
import KhoTestSupport
import Glibc
import Testing

// Where policies come from (never the current folder, never a file or folder others can change)
// and the modes of what kho writes for itself.

/// A policy whose one command source touches `marker`, backing up into the sandbox's repository.
private func markerPolicy(_ sandbox: Sandbox, marker: String, name: String = "marker") throws -> String {
    try commandPolicy(sandbox, name: name, sourceName: "\(name)-dump", command: "touch \(marker); echo data")
}

/// A policy with one command source, backing up into the sandbox's repository (its password in a
/// 0600 file beside it).
func commandPolicy(_ sandbox: Sandbox, name: String, sourceName: String, command: String) throws -> String {
    let passwordFile = sandbox.path("repository.pass")
    if access(passwordFile, F_OK) != 0 {
        try writeFile(passwordFile, Array((sandbox.password + "\n").utf8), mode: 0o600)
    }
    return """
        name: \(name)
        agency: Sở Tư pháp
        system: kiểm thử
        security-level: 3
        schedule: "0 1 * * *"
        repository:
          path: \(sandbox.repo)
          password-file: \(passwordFile)
        sources:
          - name: \(sourceName)
            kind: command
            command: \(command)
        objectives:
          rpo: 24h
          rto: 2h

        """
}

/// Every entry below `path` (itself included) with its lstat mode.
private func modesBelow(_ path: String) throws -> [(String, mode_t)] {
    var found: [(String, mode_t)] = []
    var info = stat()
    try check("lstat", path) { lstat(path, &info) }
    found.append((path, info.st_mode))
    for relative in try FileManager.default.subpathsOfDirectory(atPath: path) {
        let full = path + "/" + relative
        try check("lstat", full) { lstat(full, &info) }
        found.append((full, info.st_mode))
    }
    return found
}

@Suite("policy location and file modes")
struct PolicyLocationTests {
    @Test("`kho run` in a folder others can write, holding ./policies, runs none of its commands")
    func currentFolderPoliciesIgnored() throws {
        let sandbox = try Sandbox("policies-cwd")
        try sandbox.initRepository()
        let shared = sandbox.path("shared")
        try makeDirectories(shared + "/policies")
        chmod(shared, 0o777)
        let marker = sandbox.path("pwned")
        try writeFile(shared + "/policies/evil.yaml", Array(try markerPolicy(sandbox, marker: marker).utf8))
        let state = sandbox.path("state")
        let run = try Child.spawn("/bin/sh", ["-c", "cd '\(shared)' && exec '\(Harness.binary)' run --state-dir '\(state)'"],
                                  environment: sandbox.environment(["KHO_PASSWORD": nil]), scratch: sandbox.dir).wait()
        #expect(access(marker, F_OK) != 0, "a command from ./policies ran: \(run)")
        #expect(run.exitCode == 2, "\(run)")
        #expect(run.all.contains("/etc/kho/policies"), "the error names where policies are looked for: \(run)")
        #expect(try sandbox.snapshots().isEmpty)
    }

    @Test("a policy file or folder that others can write, or below a folder others can write, is refused; nothing runs")
    func writablePoliciesRefused() throws {
        let sandbox = try Sandbox("policies-writable")
        try sandbox.initRepository()
        let state = sandbox.path("state")
        let marker = sandbox.path("pwned")

        // A world-writable policy file, given explicitly.
        let folder = sandbox.path("policies")
        try makeDirectories(folder)
        chmod(folder, 0o755)
        try writeFile(folder + "/p.yaml", Array(try markerPolicy(sandbox, marker: marker).utf8), mode: 0o666)
        chmod(folder + "/p.yaml", 0o666)
        let run = try sandbox.kho(["run", "--policies", folder, "--state-dir", state], env: ["KHO_PASSWORD": nil])
        #expect(run.exitCode == 2, "\(run)")
        #expect(run.all.contains("every user"), "\(run)")
        #expect(access(marker, F_OK) != 0, "a command of a world-writable policy ran: \(run)")

        // A group-writable folder, through KHO_POLICIES.
        chmod(folder + "/p.yaml", 0o644)
        chown(folder, 0, 12345)
        chmod(folder, 0o775)
        let viaEnvironment = try sandbox.kho(["run", "--state-dir", state], env: ["KHO_PASSWORD": nil, "KHO_POLICIES": folder])
        #expect(viaEnvironment.exitCode == 2, "\(viaEnvironment)")
        #expect(access(marker, F_OK) != 0, "a command of a policy in a group-writable folder ran: \(viaEnvironment)")

        // A safe folder below a world-writable one (not sticky: anyone can rename it away).
        chmod(folder, 0o755)
        let open = sandbox.path("open")
        try makeDirectories(open)
        chmod(open, 0o777)
        let below = open + "/policies"
        try makeDirectories(below)
        chmod(below, 0o755)
        try writeFile(below + "/p.yaml", Array(try markerPolicy(sandbox, marker: marker).utf8), mode: 0o644)
        let nested = try sandbox.kho(["run", "--policies", below, "--state-dir", state], env: ["KHO_PASSWORD": nil])
        #expect(nested.exitCode == 2, "\(nested)")
        #expect(access(marker, F_OK) != 0, "a command of a policy below a world-writable folder ran: \(nested)")

        // A file owned by another user.
        chown(folder + "/p.yaml", 12345, 12345)
        let foreign = try sandbox.kho(["run", "--policies", folder, "--state-dir", state], env: ["KHO_PASSWORD": nil])
        #expect(foreign.exitCode == 2 && foreign.all.contains("belongs to user 12345"), "\(foreign)")
        #expect(access(marker, F_OK) != 0, "a command of another user's policy ran: \(foreign)")

        // The same policy, owned by root and 0644 in a 0755 folder: it runs.
        chown(folder + "/p.yaml", 0, 0)
        let good = try sandbox.kho(["run", "--policies", folder, "--state-dir", state], env: ["KHO_PASSWORD": nil])
        #expect(good.exitCode == 0, "\(good)")
        #expect(access(marker, F_OK) == 0, "the trusted policy ran: \(good)")
    }

    @Test("after `kho run`, every file kho wrote in its state folder is 0600 and every folder 0700; new repository files too")
    func stateAndRepositoryModes() throws {
        let sandbox = try Sandbox("modes")
        try sandbox.initRepository()
        let folder = sandbox.path("policies")
        try makeDirectories(folder)
        try writeFile(folder + "/p.yaml", Array(try markerPolicy(sandbox, marker: sandbox.path("ran")).utf8), mode: 0o644)
        let state = sandbox.path("state")
        let before = Set(try modesBelow(sandbox.repo).map(\.0))
        let run = try sandbox.kho(["run", "--policies", folder, "--state-dir", state], env: ["KHO_PASSWORD": nil])
        try #require(run.exitCode == 0, "\(run)")
        // A restore and a verify of the snapshot add the ledger entries and evidence of those.
        let target = sandbox.path("restored")
        try sandbox.ok("restore", "latest", "--to-file", target, "--yes", env: ["KHO_STATE_DIR": state])
        for (path, mode) in try modesBelow(state) {
            if mode & S_IFMT == S_IFDIR {
                #expect(mode & 0o777 == 0o700, "\(path) is \(String(mode & 0o777, radix: 8))")
            } else {
                #expect(mode & 0o777 == 0o600, "\(path) is \(String(mode & 0o777, radix: 8))")
            }
        }
        for (path, mode) in try modesBelow(sandbox.repo) where !before.contains(path) {
            let wanted: mode_t = mode & S_IFMT == S_IFDIR ? 0o700 : 0o600
            #expect(mode & 0o777 == wanted || mode & 0o777 == 0o400, "\(path) is \(String(mode & 0o777, radix: 8))")
        }
    }
}
