import Foundation
import Glibc

/// One way for kho to run a tool: a program and its arguments (never a shell line unless the
/// program is the shell), a whole environment the caller builds (see `ChildEnvironment`), standard
/// input from /dev/null or fed by kho, standard output discarded or read as a stream, standard
/// error kept (its last `stderrLimit` bytes) for the message. The child is spawned with
/// `posix_spawn` and reaped with `waitpid` by whoever calls `wait()`.
public final class Subprocess: @unchecked Sendable {
    public enum Input: Sendable { case null, pipe }
    public enum Output: Sendable { case null, pipe }

    /// How the child ended.
    public enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
        public var succeeded: Bool { self == .exited(0) }
    }

    public let program: String
    public let pid: pid_t
    public let stderrLimit: Int
    private var inputFD: Int32
    private var outputFD: Int32
    private let stderrTail = Locked<[UInt8]>([])
    private let stderrReader: Worker
    private let ended = Locked<Termination?>(nil)

    /// Starts `program` with `arguments` and exactly `environment`. Throws when it cannot start.
    public init(program: String, arguments: [String], environment: [String: String], input: Input = .null, output: Output = .null,
                stderrLimit: Int = 64 << 10) throws {
        self.program = program
        self.stderrLimit = stderrLimit
        // Every descriptor made here is close-on-exec: another child started later (by another
        // thread) must not hold an end of these pipes, or a reader would never see their end.
        func makePipe() throws -> (read: Int32, write: Int32) {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw KhoError.posix("pipe", program, errno: errno) }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return (fds[0], fds[1])
        }
        let stdinPipe = input == .pipe ? try makePipe() : nil
        let stdoutPipe = output == .pipe ? try makePipe() : nil
        let stderrPipe = try makePipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdinPipe { posix_spawn_file_actions_adddup2(&actions, stdinPipe.read, 0) } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if let stdoutPipe { posix_spawn_file_actions_adddup2(&actions, stdoutPipe.write, 1) } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stderrPipe.write, 2)
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            // The environment may hold a password for this child: wiped before it is freed.
            for entry in envp { if let entry { memset(entry, 0, strlen(entry)) }; free(entry) }
        }
        var child: pid_t = 0
        let code = posix_spawn(&child, program, &actions, nil, argv, envp)
        // The child's ends are the child's now.
        if let stdinPipe { close(stdinPipe.read) }
        if let stdoutPipe { close(stdoutPipe.write) }
        close(stderrPipe.write)
        guard code == 0 else {
            if let stdinPipe { close(stdinPipe.write) }
            if let stdoutPipe { close(stdoutPipe.read) }
            close(stderrPipe.read)
            throw KhoError(.failure, "Cannot start \(program): \(String(cString: strerror(code))).")
        }
        pid = child
        inputFD = stdinPipe?.write ?? -1
        outputFD = stdoutPipe?.read ?? -1
        let errorFD = stderrPipe.read
        let tail = stderrTail
        let limit = stderrLimit
        stderrReader = Worker(name: "kho-child-stderr") {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(errorFD, $0.baseAddress, 8192) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                tail.withLock { kept in
                    kept.append(contentsOf: buffer[0..<n])
                    if kept.count > limit { kept.removeFirst(kept.count - limit) }
                }
            }
            close(errorFD)
        }
    }

    /// Reads the child's standard output (`output: .pipe`); 0 at its end.
    public func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try Syscall.call("read", "the output of \(program)") { Glibc.read(outputFD, buffer.baseAddress, buffer.count) }
    }

    /// Writes all of `chunk` to the child's standard input (`input: .pipe`).
    public func write(_ chunk: UnsafeRawBufferPointer) throws {
        try Syscall.writeAll(inputFD, chunk, "the input of \(program)")
    }

    /// Closes the child's standard input: it reads its end.
    public func closeInput() {
        if inputFD >= 0 { close(inputFD) }
        inputFD = -1
    }

    /// Closes kho's end of the child's standard output: a child still writing gets SIGPIPE.
    public func closeOutput() {
        if outputFD >= 0 { close(outputFD) }
        outputFD = -1
    }

    /// Sends `signal` to the child unless it has been reaped (its pid could be another's by then).
    public func signal(_ signal: Int32) {
        ended.withLock { if $0 == nil { kill(pid, signal) } }
    }

    /// Waits for the child and its standard error; closes what kho still holds of its pipes.
    @discardableResult
    public func wait() -> Termination {
        closeInput()
        if let done = ended.current { return done }
        // Wait for the end without reaping, then reap under the lock `signal` takes: a signal is
        // never sent to a pid that may already belong to another process.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
        let termination = ended.withLock { done -> Termination in
            if let done { return done }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let result: Termination = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
            done = result
            return result
        }
        stderrReader.join()
        closeOutput()
        return termination
    }

    /// Whether the child has ended (it is not reaped here: `wait()` does that).
    public var hasEnded: Bool {
        if ended.current != nil { return true }
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info._sifields._sigchld.si_pid == pid
    }

    /// The child's standard error (its last `stderrLimit` bytes), as text.
    public var standardError: String { String(decoding: stderrTail.current, as: UTF8.self) }

    deinit {
        closeInput()
        closeOutput()
    }

    /// Runs a short program to its end and returns how it ended with its standard output and
    /// error (each bounded to `limit` bytes; the rest is read and dropped).
    public static func collect(_ program: String, _ arguments: [String], environment: [String: String],
                               limit: Int = 256 << 10) throws -> (termination: Termination, output: String, error: String) {
        let child = try Subprocess(program: program, arguments: arguments, environment: environment, output: .pipe, stderrLimit: limit)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try child.read($0) }
            if n == 0 { break }
            if output.count < limit { output += buffer[0..<min(n, limit - output.count)] }
        }
        let termination = child.wait()
        return (termination, String(decoding: output, as: UTF8.self), child.standardError)
    }
}
