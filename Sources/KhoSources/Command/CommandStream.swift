import Foundation
import Glibc
import KhoCore
import KhoSupport

/// Runs a command through `/bin/sh -c` and exposes its standard output as a stream for the
/// archiver. Its standard error is kept (the last 64 KiB) for messages and the catalog.
///
/// `finish()` waits for the command and throws when it exited non-zero, was killed, or ran longer
/// than the timeout: a dump that did not complete must never become a snapshot.
public final class CommandStream: @unchecked Sendable {
    public let command: String
    public let displayName: String
    private let process = Process()
    private let stdoutPipe = Pipe()
    private let stderrPipe = Pipe()
    private let stderrTail = Locked<[UInt8]>([])
    private var stderrReader: Worker?
    private var timer: DispatchSourceTimer?
    private let timedOut = Locked(false)
    public let timeout: TimeInterval?
    public static let stderrLimit = 64 << 10

    /// The command gets kho's minimal environment (`ChildEnvironment.minimal`) plus `environment`:
    /// never kho's own secrets. What kho shows of it (`displayName`, its error output) has every
    /// secret and every value a policy took from a variable masked.
    public init(command: String, displayName: String? = nil, environment: [String: String]? = nil, timeout: TimeInterval? = nil) {
        self.command = command
        self.displayName = Secrets.maskCommand(displayName ?? command)
        self.timeout = timeout
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.environment = ChildEnvironment.minimal(environment ?? [:])
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        process.standardInput = FileHandle.nullDevice
    }

    public func start() throws {
        do {
            try process.run()
        } catch {
            throw KhoError(.source, "Cannot start the command `\(displayName)`: \(error.localizedDescription).")
        }
        let fd = stderrPipe.fileHandleForReading.fileDescriptor
        let tail = stderrTail
        stderrReader = Worker(name: "kho-stderr") {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 8192) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                tail.withLock { kept in
                    kept.append(contentsOf: buffer[0..<n])
                    if kept.count > CommandStream.stderrLimit { kept.removeFirst(kept.count - CommandStream.stderrLimit) }
                }
            }
        }
        if let timeout {
            let timer = DispatchSource.makeTimerSource(queue: .global())
            timer.schedule(deadline: .now() + timeout)
            let pid = process.processIdentifier
            let flag = timedOut
            timer.setEventHandler {
                flag.withLock { $0 = true }
                kill(pid, SIGKILL)
            }
            timer.resume()
            self.timer = timer
        }
    }

    /// Reads the command's output; 0 at its end.
    public func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let fd = stdoutPipe.fileHandleForReading.fileDescriptor
        return try Syscall.call("read", "the output of `\(displayName)`") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// The command's standard error (its last 64 KiB), as text.
    public var standardError: String {
        Secrets.maskCommand(String(decoding: stderrTail.current, as: UTF8.self))
    }

    /// Waits for the command; throws unless it exited 0 within its time.
    public func finish() throws {
        process.waitUntilExit()
        timer?.cancel()
        stderrReader?.join()
        let stderrText = standardError.trimmingCharacters(in: .whitespacesAndNewlines)
        let detail = stderrText.isEmpty ? "" : " Its error output:\n\(stderrText)"
        if timedOut.current {
            throw KhoError(.source, "`\(displayName)` was stopped after its timeout of \(Int(timeout ?? 0)) s; no snapshot was written: raise the timeout or find why the dump is slow.\(detail)")
        }
        switch process.terminationReason {
        case .exit where process.terminationStatus == 0:
            return
        case .exit:
            throw KhoError(.source, "`\(displayName)` exited with status \(process.terminationStatus); no snapshot was written: fix the command and run the backup again.\(detail)")
        case .uncaughtSignal:
            throw KhoError(.source, "`\(displayName)` was killed by signal \(process.terminationStatus); no snapshot was written: run the backup again.\(detail)")
        @unknown default:
            throw KhoError(.source, "`\(displayName)` ended abnormally; no snapshot was written.\(detail)")
        }
    }

    /// Stops the command (after a failure on kho's side) and reaps it.
    public func terminate() {
        // Closing our end first makes a command blocked on writing get SIGPIPE even if the kill
        // reaches only the shell.
        try? stdoutPipe.fileHandleForReading.close()
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        timer?.cancel()
        stderrReader?.join()
    }
}
