import Foundation
import Glibc
import KhoCore
import KhoSupport
import Testing

// Linux calls that Swift's Glibc module does not export.
@_silgen_name("pipe2") private func systemPipe2(_ fds: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32

/// How long a test waits for a child before it kills it (a hung kho must fail the test, not CI).
package let childProcessTimeout: Double = 240

// MARK: errors

package struct HarnessError: Error, CustomStringConvertible {
    package var description: String
    package init(_ text: String) { description = text }

    package static func posix(_ call: String, _ object: String, _ code: Int32 = errno) -> HarnessError {
        HarnessError("\(call)(\(object)) failed: \(String(cString: strerror(code)))")
    }
}

@discardableResult
package func check<T: BinaryInteger>(_ call: String, _ object: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        if errno == EINTR { continue }
        throw HarnessError.posix(call, object())
    }
}

// MARK: processes

package struct ProcessResult: CustomStringConvertible {
    /// The exit code, or nil when a signal ended the process.
    package var exitCode: Int32?
    package var signal: Int32?
    package var stdout: [UInt8]
    package var stderr: [UInt8]
    package var arguments: [String]

    package var out: String { String(decoding: stdout, as: UTF8.self) }
    package var err: String { String(decoding: stderr, as: UTF8.self) }
    /// stdout and stderr together, for searching messages wherever kho printed them.
    package var all: String { out + "\n" + err }

    package var description: String {
        let how = exitCode.map { "exit \($0)" } ?? "signal \(signal ?? -1)"
        func clip(_ s: String) -> String { s.count > 4000 ? String(s.prefix(4000)) + "…" : s }
        return "`kho \(arguments.joined(separator: " "))` → \(how)\n--- stdout:\n\(clip(out))\n--- stderr:\n\(clip(err))"
    }

    /// The stdout parsed as JSON.
    package func json() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(stdout), options: [.fragmentsAllowed])
    }

    package func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { d in
            // kho prints dates as ISO 8601; the tests do not look at them closely.
            _ = try d.singleValueContainer().decode(String.self)
            return Date(timeIntervalSince1970: 0)
        }
        return try decoder.decode(T.self, from: Data(stdout))
    }
}

package enum StandardInput {
    case null
    case file(String)
    /// A pipe whose write end the test holds (`Child.writeInput`, `Child.closeInput`).
    case pipe
}

/// A running process.
package final class Child: @unchecked Sendable {
    package let pid: pid_t
    package let arguments: [String]
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
    package static func spawn(_ executable: String, _ arguments: [String], environment: [String: String],
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
    package func writeInput(_ bytes: [UInt8]) throws {
        precondition(inputFD >= 0, "the child's stdin is not a pipe")
        var done = 0
        try bytes.withUnsafeBytes { raw in
            while done < raw.count {
                let n = try check("write", "child stdin") { write(inputFD, raw.baseAddress! + done, raw.count - done) }
                done += n
            }
        }
    }

    package func closeInput() {
        if inputFD >= 0 { close(inputFD); inputFD = -1 }
    }

    package func send(_ signal: Int32) {
        if result == nil { kill(pid, signal) }
    }

    /// Whether the process has not been reaped yet (it may be a zombie).
    package var isRunning: Bool {
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
    package func wait(timeout: Double = childProcessTimeout) -> ProcessResult {
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
package func requireRoot() throws {
    if geteuid() != 0 { try Test.cancel("this test needs root (it sets owners and creates devices)") }
}

