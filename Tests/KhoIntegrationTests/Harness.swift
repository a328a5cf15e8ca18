import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// The harness for tests that drive the built `kho` binary as a subprocess against real files.
//
// - `Sandbox`: a temporary folder per test (removed afterwards) holding the repository and the data;
//   `kho(...)` runs the binary with KHO_REPOSITORY, KHO_PASSWORD and a cheap scrypt (test-only).
// - `Child`: a process started with posix_spawn; stdout/stderr go to files (no pipe deadlocks),
//   stdin comes from nothing, a file, or a pipe the test writes to.
// - `Manifest`: a directory tree described by lstat (path, kind, mode, owner, size, mtime in ns,
//   SHA-256 of content, link target), walked with openat so that paths longer than PATH_MAX work.

enum Harness {
    static let packageRoot = TestPaths.packageRoot

    /// The `kho` binary: $KHO_BINARY, or the debug build in the package.
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["KHO_BINARY"], !path.isEmpty { return path }
        return packageRoot + "/.build/debug/kho"
    }()

    static var binaryExists: Bool { access(binary, X_OK) == 0 }

    /// Set by scripts/test for its release lane (KHO_TEST_LANE=release): the binary under test is
    /// the release build, which refuses test-only knobs such as KHO_TEST_SCRYPT_N.
    static let releaseLane = ProcessInfo.processInfo.environment["KHO_TEST_LANE"] == "release"

    /// Longest any single kho run may take before the test kills it and fails.
    static let processTimeout = childProcessTimeout
}

// MARK: the sandbox

/// A temporary folder for one test: the repository lives in `repo`, data anywhere below `dir`.
final class Sandbox: @unchecked Sendable {
    let dir: String
    var repo: String
    var password = "correct horse battery staple"
    /// Mount points to unmount before removing the folder.
    var mounts: [String] = []

    init(_ label: String = "test") throws {
        try #require(Harness.binaryExists, "kho binary not found at \(Harness.binary): build it (swift build) or set KHO_BINARY")
        dir = try ServerSupport.makeTemporaryFolder("it-\(label)")
        repo = dir + "/repo"
    }

    deinit {
        for mount in mounts.reversed() { umount2(mount, Int32(MNT_DETACH)) }
        try? removeTree(dir)
    }

    func path(_ relative: String) -> String { dir + "/" + relative }

    /// The environment of every kho run: the test process's, without any KHO_ setting, plus the
    /// repository, the password and the cheap scrypt; `extra` adds or (with nil) removes variables.
    func environment(_ extra: [String: String?] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("KHO_") }
        env["KHO_REPOSITORY"] = repo
        env["KHO_PASSWORD"] = password
        // A release build refuses the knob and makes standard (slower) keys instead.
        if !Harness.releaseLane { env["KHO_TEST_SCRYPT_N"] = "1024" }
        for (key, value) in extra { env[key] = value }
        return env
    }

    /// Starts kho and returns at once.
    func start(_ arguments: [String], input: StandardInput = .null, env extra: [String: String?] = [:]) throws -> Child {
        try Child.spawn(Harness.binary, arguments, environment: environment(extra), input: input, scratch: dir)
    }

    /// Runs kho to its end.
    @discardableResult
    func kho(_ arguments: String..., input: StandardInput = .null, env extra: [String: String?] = [:]) throws -> ProcessResult {
        try start(arguments, input: input, env: extra).wait()
    }

    @discardableResult
    func kho(_ arguments: [String], input: StandardInput = .null, env extra: [String: String?] = [:]) throws -> ProcessResult {
        try start(arguments, input: input, env: extra).wait()
    }

    /// Runs kho and requires exit 0.
    @discardableResult
    func ok(_ arguments: String..., input: StandardInput = .null, env extra: [String: String?] = [:],
            sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
        let result = try kho(arguments, input: input, env: extra)
        try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
        return result
    }

    /// `kho init` with the given options (exit 0 required).
    func initRepository(_ options: String...) throws {
        let result = try kho(["init"] + options)
        try #require(result.exitCode == 0, "\(result)")
    }

    /// `kho snapshots --json`, decoded loosely.
    func snapshots() throws -> [[String: Any]] {
        let result = try kho("snapshots", "--json")
        try #require(result.exitCode == 0, "\(result)")
        return try #require(try result.json() as? [[String: Any]], "\(result)")
    }

    /// Names of the files in a repository folder (`data` is fanned out one level).
    func repositoryFiles(_ folder: String) throws -> [String: Int] {
        var found: [String: Int] = [:]
        let base = repo + "/" + folder
        func scan(_ path: String) throws {
            for name in try FileManager.default.contentsOfDirectory(atPath: path) where !name.hasPrefix(".") {
                let full = path + "/" + name
                var info = stat()
                try check("lstat", full) { lstat(full, &info) }
                if info.st_mode & S_IFMT == S_IFDIR { try scan(full) } else { found[full] = Int(info.st_size) }
            }
        }
        if access(base, F_OK) == 0 { try scan(base) }
        return found
    }
}

// MARK: the manifest

/// What a test compares between a source tree and its restored copy.
struct ManifestEntry: Equatable, CustomStringConvertible {
    var kind: String
    var mode: UInt32
    var uid: UInt32
    var gid: UInt32
    /// 0 for folders (their st_size depends on the filesystem's history, not on their content).
    var size: Int64
    /// Nanoseconds since 1970.
    var mtime: Int64
    var sha256: String?
    var linkTarget: [UInt8]?
    /// Link count of files (hard links must come back as hard links); 0 for other kinds.
    var links: UInt64
    /// Device number of character and block devices; 0 for other kinds.
    var rdev: UInt64 = 0

    var description: String {
        var s = "\(kind) mode \(String(mode, radix: 8)) owner \(uid):\(gid) size \(size) mtime \(mtime)"
        if let sha256 { s += " sha256 \(sha256.prefix(16))" }
        if let linkTarget { s += " -> \(Manifest.show(linkTarget))" }
        if links > 0 { s += " links \(links)" }
        if rdev > 0 { s += " rdev \(rdev)" }
        return s
    }
}

struct Manifest {
    /// Keyed by the path relative to the root, as bytes ("" is the root folder itself).
    var entries: [[UInt8]: ManifestEntry] = [:]
    var inodes: [[UInt8]: UInt64] = [:]
    /// st_blocks (512-byte units) of regular files.
    var blocks: [[UInt8]: Int64] = [:]

    /// Walks `root` with lstat, never following symlinks.
    static func of(_ root: String) throws -> Manifest {
        var manifest = Manifest()
        let fd = try check("open", root) { open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(fd) }
        var info = stat()
        try check("fstat", root) { fstat(fd, &info) }
        manifest.record([], info: info, content: nil, link: nil)
        try manifest.walk(fd, relative: [], shown: root)
        return manifest
    }

    private mutating func walk(_ fd: Int32, relative: [UInt8], shown: String) throws {
        for name in try directoryEntries(fd, shown) {
            let path = relative.isEmpty ? name : relative + [0x2f] + name
            let shownChild = shown + "/" + Manifest.show(name)
            var info = stat()
            try withCName(name) { c in try check("fstatat", shownChild) { fstatat(fd, c, &info, AT_SYMLINK_NOFOLLOW) } }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                record(path, info: info, content: nil, link: nil)
                let sub = try withCName(name) { c in
                    try check("openat", shownChild) { openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                }
                defer { close(sub) }
                try walk(sub, relative: path, shown: shownChild)
            case S_IFREG:
                let file = try withCName(name) { c in
                    try check("openat", shownChild) { openat(fd, c, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
                }
                defer { close(file) }
                let context = try SHA256.Context()
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                while true {
                    let n = try buffer.withUnsafeMutableBytes { raw in try check("read", shownChild) { read(file, raw.baseAddress, raw.count) } }
                    if n == 0 { break }
                    try buffer.withUnsafeBytes { try context.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                }
                record(path, info: info, content: try context.finish().hex, link: nil)
            case S_IFLNK:
                var target = [UInt8](repeating: 0, count: 8192)
                let n = try withCName(name) { c in
                    try check("readlinkat", shownChild) {
                        target.withUnsafeMutableBufferPointer { readlinkat(fd, c, UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), 8192) }
                    }
                }
                record(path, info: info, content: nil, link: Array(target[0..<n]))
            default:
                record(path, info: info, content: nil, link: nil)
            }
        }
    }

    private mutating func record(_ path: [UInt8], info: stat, content: String?, link: [UInt8]?) {
        let kind: String
        switch info.st_mode & S_IFMT {
        case S_IFREG: kind = "file"
        case S_IFDIR: kind = "dir"
        case S_IFLNK: kind = "symlink"
        case S_IFIFO: kind = "fifo"
        case S_IFCHR: kind = "chardev"
        case S_IFBLK: kind = "blockdev"
        case S_IFSOCK: kind = "socket"
        default: kind = "unknown"
        }
        let isFile = kind == "file"
        entries[path] = ManifestEntry(kind: kind, mode: UInt32(info.st_mode & 0o7777), uid: info.st_uid, gid: info.st_gid,
                                      size: kind == "dir" ? 0 : Int64(info.st_size),
                                      mtime: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
                                      sha256: content, linkTarget: link, links: isFile ? UInt64(info.st_nlink) : 0,
                                      rdev: kind == "chardev" || kind == "blockdev" ? UInt64(info.st_rdev) : 0)
        inodes[path] = UInt64(info.st_ino)
        if isFile { blocks[path] = Int64(info.st_blocks) }
    }

    /// Sets of paths that share an inode (hard links), for files with more than one link.
    var hardLinkGroups: Set<Set<[UInt8]>> {
        var byInode: [UInt64: Set<[UInt8]>] = [:]
        for (path, entry) in entries where entry.kind == "file" && entry.links > 1 {
            byInode[inodes[path]!, default: []].insert(path)
        }
        return Set(byInode.values)
    }

    /// Every difference from `expected`, one line each; empty when the trees match.
    func differences(from expected: Manifest) -> [String] {
        var lines: [String] = []
        for path in Set(expected.entries.keys).union(entries.keys).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let want = expected.entries[path]
            let got = entries[path]
            if want != got {
                lines.append("\(Manifest.show(path)): expected \(want.map(\.description) ?? "nothing"), got \(got.map(\.description) ?? "nothing")")
            }
        }
        let show: (Set<Set<[UInt8]>>) -> String = { groups in
            groups.map { $0.map(Manifest.show).sorted().joined(separator: " = ") }.sorted().joined(separator: "; ")
        }
        if hardLinkGroups != expected.hardLinkGroups {
            lines.append("hard links differ: expected [\(show(expected.hardLinkGroups))], got [\(show(hardLinkGroups))]")
        }
        return lines
    }

    /// A path for messages: valid UTF-8 as is (newlines escaped), other bytes as \xNN.
    static func show(_ bytes: [UInt8]) -> String {
        if bytes.count > 300 {
            // Very long paths: shorten each long component so that messages stay readable.
            return bytes.split(separator: 0x2f, omittingEmptySubsequences: false).map { part -> String in
                part.count > 40 ? show(Array(part.prefix(8))) + "…(\(part.count) bytes)" : show(Array(part))
            }.joined(separator: "/")
        }
        if let text = String(validating: bytes, as: UTF8.self) {
            return text.replacingOccurrences(of: "\n", with: "\\n")
        }
        return bytes.map { $0 >= 0x20 && $0 < 0x7f ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }.joined()
    }
}
