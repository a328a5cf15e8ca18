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
    private let environment: [String: String]
    private var child: Subprocess?
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
        self.environment = ChildEnvironment.minimal(environment ?? [:])
    }

    public func start() throws {
        let child: Subprocess
        do {
            child = try Subprocess(program: "/bin/sh", arguments: ["-c", command], environment: environment, output: .pipe,
                                   stderrLimit: CommandStream.stderrLimit)
        } catch {
            throw KhoError(.source, "Cannot start the command `\(displayName)`: \((error as? KhoError)?.message ?? "\(error)")")
        }
        self.child = child
        if let timeout {
            let timer = DispatchSource.makeTimerSource(queue: .global())
            timer.schedule(deadline: .now() + timeout)
            let flag = timedOut
            timer.setEventHandler {
                flag.withLock { $0 = true }
                child.signal(SIGKILL)
            }
            timer.resume()
            self.timer = timer
        }
    }

    /// Reads the command's output; 0 at its end.
    public func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let child else { return 0 }
        do {
            return try child.read(buffer)
        } catch let error as KhoError {
            throw KhoError(error.kind, "Reading the output of `\(displayName)` failed: \(error.message)", retryable: error.retryable)
        }
    }

    /// The command's standard error (its last 64 KiB), as text.
    public var standardError: String {
        Secrets.maskCommand(child?.standardError ?? "")
    }

    /// Waits for the command; throws unless it exited 0 within its time.
    public func finish() throws {
        guard let child else { return }
        let termination = child.wait()
        timer?.cancel()
        let stderrText = standardError.trimmingCharacters(in: .whitespacesAndNewlines)
        let detail = stderrText.isEmpty ? "" : " Its error output:\n\(stderrText)"
        if timedOut.current {
            throw KhoError(.source, "`\(displayName)` was stopped after its timeout of \(Int(timeout ?? 0)) s; no snapshot was written: raise the timeout or find why the dump is slow.\(detail)")
        }
        switch termination {
        case .exited(0):
            return
        case .exited(let status):
            throw KhoError(.source, "`\(displayName)` exited with status \(status); no snapshot was written: fix the command and run the backup again.\(detail)")
        case .signalled(let signal):
            throw KhoError(.source, "`\(displayName)` was killed by signal \(signal); no snapshot was written: run the backup again.\(detail)")
        }
    }

    /// Stops the command (after a failure on kho's side) and reaps it.
    public func terminate() {
        guard let child else { return }
        // Closing our end first makes a command blocked on writing get SIGPIPE even if the kill
        // reaches only the shell.
        child.closeOutput()
        child.signal(SIGKILL)
        child.wait()
        timer?.cancel()
    }
}
