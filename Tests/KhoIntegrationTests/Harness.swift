import Foundation
import Glibc
import KhoCore
import KhoSupport
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
    /// The package root, derived from this file's path (Tests/KhoIntegrationTests/Harness.swift).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

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
    static let processTimeout: Double = 240
}

// Linux calls that Swift's Glibc module does not export.
@_silgen_name("pipe2") private func systemPipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32
@_silgen_name("getrandom") private func systemGetrandom(_ buffer: UnsafeMutableRawPointer, _ count: Int, _ flags: UInt32) -> Int

// MARK: errors

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }

    static func posix(_ call: String, _ object: String, _ code: Int32 = errno) -> HarnessError {
        HarnessError("\(call)(\(object)) failed: \(String(cString: strerror(code)))")
    }
}

@discardableResult
func check<T: BinaryInteger>(_ call: String, _ object: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        if errno == EINTR { continue }
        throw HarnessError.posix(call, object())
    }
}

// MARK: processes

struct ProcessResult: CustomStringConvertible {
    /// The exit code, or nil when a signal ended the process.
    var exitCode: Int32?
    var signal: Int32?
    var stdout: [UInt8]
    var stderr: [UInt8]
    var arguments: [String]

    var out: String { String(decoding: stdout, as: UTF8.self) }
    var err: String { String(decoding: stderr, as: UTF8.self) }
    /// stdout and stderr together, for searching messages wherever kho printed them.
    var all: String { out + "\n" + err }

    var description: String {
        let how = exitCode.map { "exit \($0)" } ?? "signal \(signal ?? -1)"
        func clip(_ s: String) -> String { s.count > 4000 ? String(s.prefix(4000)) + "…" : s }
        return "`kho \(arguments.joined(separator: " "))` → \(how)\n--- stdout:\n\(clip(out))\n--- stderr:\n\(clip(err))"
    }

    /// The stdout parsed as JSON.
    func json() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(stdout), options: [.fragmentsAllowed])
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { d in
            // kho prints dates as ISO 8601; the tests do not look at them closely.
            _ = try d.singleValueContainer().decode(String.self)
            return Date(timeIntervalSince1970: 0)
        }
        return try decoder.decode(T.self, from: Data(stdout))
    }
}

enum StandardInput {
    case null
    case file(String)
    /// A pipe whose write end the test holds (`Child.writeInput`, `Child.closeInput`).
    case pipe
}

/// A running process.
final class Child: @unchecked Sendable {
    let pid: pid_t
    let arguments: [String]
    private let stdoutPath: String
    private let stderrPath: String
    private var inputFD: Int32
    private var result: ProcessResult?

    fileprivate init(pid: pid_t, arguments: [String], stdoutPath: String, stderrPath: String, inputFD: Int32) {
        self.pid = pid
        self.arguments = arguments
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        self.inputFD = inputFD
    }

    /// Starts `executable` with exactly `environment`; output goes to files in `scratch`.
    static func spawn(_ executable: String, _ arguments: [String], environment: [String: String],
                      input: StandardInput = .null, scratch: String) throws -> Child {
        let tag = Hex.encode(try Random.bytes(6))
        let stdoutPath = scratch + "/.out-" + tag
        let stderrPath = scratch + "/.err-" + tag
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pipeRead: Int32 = -1
        var pipeWrite: Int32 = -1
        switch input {
        case .null:
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        case .file(let path):
            posix_spawn_file_actions_addopen(&actions, 0, path, O_RDONLY, 0)
        case .pipe:
            var fds: [Int32] = [-1, -1]
            try check("pipe2", "stdin") { systemPipe2(&fds, O_CLOEXEC) }
            pipeRead = fds[0]
            pipeWrite = fds[1]
            posix_spawn_file_actions_adddup2(&actions, pipeRead, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)

        let argv = ([executable] + arguments).map { strdup($0) }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") }
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let code = (argv + [nil]).withUnsafeBufferPointer { a in
            (envp + [nil]).withUnsafeBufferPointer { e in
                posix_spawn(&pid, executable, &actions, nil, a.baseAddress!, e.baseAddress!)
            }
        }
        if pipeRead >= 0 { close(pipeRead) }
        guard code == 0 else {
            if pipeWrite >= 0 { close(pipeWrite) }
            throw HarnessError.posix("posix_spawn", executable, code)
        }
        return Child(pid: pid, arguments: arguments, stdoutPath: stdoutPath, stderrPath: stderrPath, inputFD: pipeWrite)
    }

    /// Writes to the child's stdin pipe (all of it; blocks while the pipe is full).
    func writeInput(_ bytes: [UInt8]) throws {
        precondition(inputFD >= 0, "the child's stdin is not a pipe")
        var done = 0
        try bytes.withUnsafeBytes { raw in
            while done < raw.count {
                let n = try check("write", "child stdin") { write(inputFD, raw.baseAddress! + done, raw.count - done) }
                done += n
            }
        }
    }

    func closeInput() {
        if inputFD >= 0 { close(inputFD); inputFD = -1 }
    }

    func send(_ signal: Int32) {
        if result == nil { kill(pid, signal) }
    }

    /// Whether the process has not been reaped yet (it may be a zombie).
    var isRunning: Bool {
        if result != nil { return false }
        return poll() == nil
    }

    /// Reaps the process if it ended; nil while it runs.
    private func poll() -> ProcessResult? {
        if let result { return result }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == 0 { return nil }
        if r < 0 && errno == EINTR { return nil }
        var ended = ProcessResult(exitCode: nil, signal: nil, stdout: [], stderr: [], arguments: arguments)
        if r == pid {
            if status & 0x7f == 0 { ended.exitCode = (status >> 8) & 0xff } else { ended.signal = status & 0x7f }
        } else {
            ended.signal = -1
        }
        closeInput()
        ended.stdout = (try? readFile(stdoutPath)) ?? []
        ended.stderr = (try? readFile(stderrPath)) ?? []
        unlink(stdoutPath)
        unlink(stderrPath)
        result = ended
        return ended
    }

    /// Waits for the end; kills the process and records an issue when it takes longer than `timeout`.
    @discardableResult
    func wait(timeout: Double = Harness.processTimeout) -> ProcessResult {
        let deadline = Date().addingTimeInterval(timeout)
        var pause: UInt32 = 1000
        while true {
            if let result = poll() { return result }
            if Date() > deadline {
                kill(pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                var ended = ProcessResult(exitCode: nil, signal: SIGKILL, stdout: (try? readFile(stdoutPath)) ?? [],
                                          stderr: (try? readFile(stderrPath)) ?? [], arguments: arguments)
                ended.stderr += Array("\n[harness: killed after \(Int(timeout)) s]".utf8)
                closeInput()
                result = ended
                Issue.record("kho \(arguments.joined(separator: " ")) did not finish within \(Int(timeout)) s")
                return ended
            }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
    }

    deinit {
        if result == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            unlink(stdoutPath)
            unlink(stderrPath)
        }
        closeInput()
    }
}

/// Cancels the test when not run as root (owners, devices and mounts need it).
func requireRoot() throws {
    if geteuid() != 0 { try Test.cancel("this test needs root (it sets owners and creates devices)") }
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
        var template = Array("/tmp/kho-it-\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw HarnessError.posix("mkdtemp", "/tmp") }
        dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(dir, 0o755)
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

// MARK: files

func readFile(_ path: String) throws -> [UInt8] {
    let fd = try check("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    return try readAll(fd, path)
}

func readAll(_ fd: Int32, _ path: String) throws -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = try buffer.withUnsafeMutableBytes { raw in
            try check("read", path) { read(fd, raw.baseAddress, raw.count) }
        }
        if n == 0 { return out }
        out.append(contentsOf: buffer[0..<n])
    }
}

func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
    let fd = try check("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
    defer { close(fd) }
    try writeAll(fd, bytes, path)
}

func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws {
    try bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            done += try check("write", path) { write(fd, raw.baseAddress! + done, raw.count - done) }
        }
    }
}

func makeDirectories(_ path: String) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
}

/// Random bytes from the kernel (incompressible).
func randomBytes(_ count: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        var done = 0
        while done < raw.count {
            let n = systemGetrandom(raw.baseAddress! + done, raw.count - done, 0)
            if n > 0 { done += n }
        }
    }
    return out
}

/// A deterministic generator (SplitMix64) for reproducible pseudo-random data.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Pseudo-random but compressible text: lines like a SQL dump, of about `count` bytes.
func dumpText(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix(seed: seed)
    let words: [[UInt8]] = ["Nguyễn", "Trần", "Lê", "Phạm", "Văn", "Thị", "Minh", "Ngọc", "An", "Bình", "Châu", "Dũng",
                            "Quảng Ngãi", "Nghĩa Hành", "Sơn Tịnh", "thôn", "xã", "huyện"].map { Array($0.utf8) }
    let prefix = Array("INSERT INTO cong_dan VALUES (".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(count + 200)
    var row = 0
    while out.count < count {
        row += 1
        out.append(contentsOf: prefix)
        out.append(contentsOf: String(row).utf8)
        out.append(contentsOf: ", '".utf8)
        for _ in 0..<3 {
            out.append(contentsOf: words[Int(rng.next() % UInt64(words.count))])
            out.append(0x20)
        }
        out.append(contentsOf: "', ".utf8)
        out.append(contentsOf: String(rng.next() % 1_000_000_000).utf8)
        out.append(contentsOf: ");\n".utf8)
    }
    return Array(out.prefix(count))
}

func sha256(_ bytes: [UInt8]) -> String { try! SHA256.hash(bytes).hex }

/// Removes a tree of any depth (by descriptor, so paths longer than PATH_MAX work).
func removeTree(_ path: String) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT != S_IFDIR {
        unlink(path)
        return
    }
    let fd = try check("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    try removeContents(fd, path)
    close(fd)
    rmdir(path)
}

private func removeContents(_ fd: Int32, _ path: String) throws {
    for name in try directoryEntries(fd, path) {
        var info = stat()
        let isDirectory = withCName(name) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) } == 0 && info.st_mode & S_IFMT == S_IFDIR
        if isDirectory {
            let sub = withCName(name) { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if sub >= 0 {
                fchmod(sub, 0o700)
                try removeContents(sub, path + "/" + String(decoding: name, as: UTF8.self))
                close(sub)
            }
            _ = withCName(name) { unlinkat(fd, $0, AT_REMOVEDIR) }
        } else {
            _ = withCName(name) { unlinkat(fd, $0, 0) }
        }
    }
}

@discardableResult
func withCName<R>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    var c = name.map { CChar(bitPattern: $0) }
    c.append(0)
    return try c.withUnsafeBufferPointer { try body($0.baseAddress!) }
}

/// The names in the folder `fd` (without . and ..), as bytes, sorted.
func directoryEntries(_ fd: Int32, _ path: String) throws -> [[UInt8]] {
    let copy = try check("dup", path) { dup(fd) }
    guard let dir = fdopendir(copy) else {
        close(copy)
        throw HarnessError.posix("fdopendir", path)
    }
    defer { closedir(dir) }
    rewinddir(dir)
    var names: [[UInt8]] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
            Array(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      count: strlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self))))
        }
        if name == [0x2e] || name == [0x2e, 0x2e] { continue }
        names.append(name)
    }
    return names.sorted { $0.lexicographicallyPrecedes($1) }
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
