import Foundation
import KhoTestSupport
import Glibc
import KhoCore
import KhoSupport
import Testing

// Folders and trees deeper than any walk should recurse: a local user can make a folder 30,000
// levels deep below a backed-up path, and a key holder can write a chain of trees as deep.

/// Makes `levels` folders named `d`, one inside the other, below `base` (by descriptor: the path
/// is far longer than PATH_MAX), with `file` holding `content` in the folder at each level of `files`.
private func makeDeepFolder(_ base: String, levels: Int, files: [Int: [UInt8]]) throws {
    var fd = try check("open", base) { open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    for level in 1...levels {
        try check("mkdirat", "level \(level)") { mkdirat(fd, "d", 0o755) }
        let next = try check("openat", "level \(level)") { openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        close(fd)
        fd = next
        if let content = files[level] {
            let file = try check("openat", "file at level \(level)") { openat(fd, "file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
            try writeAll(file, content, "file at level \(level)")
            close(file)
        }
    }
    close(fd)
}

/// Reads `file` in the folder `levels` deep below `base`, or nil.
private func readDeepFile(_ base: String, levels: Int) -> [UInt8]? {
    var fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    for _ in 0..<levels {
        let next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard next >= 0 else { return nil }
        close(fd)
        fd = next
    }
    let file = openat(fd, "file", O_RDONLY | O_CLOEXEC)
    guard file >= 0 else { return nil }
    defer { close(file) }
    return try? readAll(file, "file")
}

/// Removes a tree too deep for the harness's recursive removal (`rm` walks without recursing).
private func removeDeep(_ path: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/rm")
    process.arguments = ["-rf", path]
    try? process.run()
    process.waitUntilExit()
}

@Suite("deep trees")
struct DeepTreeTests {
    @Test("a folder 30,000 levels deep: backup does not crash, warns, leaves no lock; the restore round-trips what was saved")
    func thirtyThousandLevels() throws {
        let sandbox = try Sandbox("deep")
        let data = sandbox.path("data")
        let target = sandbox.path("target")
        defer { removeDeep(data); removeDeep(target) }
        try sandbox.initRepository()
        try makeDirectories(data)
        let shallow = Array("near the top".utf8)
        try makeDeepFolder(data, levels: 30_000, files: [10: shallow, 30_000: Array("at the bottom".utf8)])

        let backup = try sandbox.kho("backup", data)
        #expect(backup.signal == nil, "kho backup crashed: \(backup)")
        #expect(backup.exitCode == 3, "\(backup)")
        #expect(backup.err.contains("folders deep, not saved"), "\(backup)")
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/locks")) ?? []
        #expect(locks.isEmpty, "a lock was left: \(locks)")

        let restore = try sandbox.kho("restore", "latest", "--target", target)
        #expect(restore.signal == nil, "kho restore crashed: \(restore)")
        #expect(restore.exitCode == 0, "\(restore)")
        #expect(readDeepFile(target + data, levels: 10) == shallow)
        let ls = try sandbox.kho("ls", "latest")
        #expect(ls.exitCode == 0, "\(ls)")
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
    }

    @Test("a chain of 100,000 trees written by a key holder: restore, ls and copy refuse it, none crashes or leaves a lock")
    func plantedDeepTreeChain() throws {
        let sandbox = try Sandbox("deep-chain")
        try sandbox.initRepository()
        let id = try plantSnapshot(sandbox) { saver in
            var node = try fileNode(Array("file".utf8), Array("bottom".utf8), saver: saver)
            for _ in 0..<100_000 { node = try folderNode(Array("d".utf8), [node], saver: saver) }
            return [node]
        }
        let target = sandbox.path("target")
        defer { removeDeep(target) }
        let restore = try sandbox.kho("restore", String(id.prefix(12)), "--target", target)
        #expect(restore.signal == nil, "kho restore crashed: \(restore)")
        #expect(restore.exitCode == 12 && restore.err.contains("folders deep"), "\(restore)")
        let ls = try sandbox.kho("ls", String(id.prefix(12)))
        #expect(ls.signal == nil && ls.exitCode == 12, "\(ls)")
        let second = sandbox.path("second-site")
        let secondEnv: [String: String?] = ["KHO_REPOSITORY": second, "KHO_FROM_PASSWORD": sandbox.password]
        let created = try sandbox.kho(["init"], env: secondEnv)
        try #require(created.exitCode == 0, "\(created)")
        let copy = try sandbox.kho(["copy", "--from-repo", sandbox.repo, String(id.prefix(12))], env: secondEnv)
        #expect(copy.signal == nil, "kho copy crashed: \(copy)")
        #expect(copy.exitCode == 12, "\(copy)")
        let secondLocks = (try? FileManager.default.contentsOfDirectory(atPath: second + "/locks")) ?? []
        #expect(secondLocks.isEmpty, "a lock was left in the copy's target: \(secondLocks)")
        let locks = (try? FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/locks")) ?? []
        #expect(locks.isEmpty, "a lock was left: \(locks)")
    }
}
