import Foundation
import Glibc
import KhoCore
import KhoSupport

/// The `postgres` side of the WAL agent: what `kho wal push` runs when PostgreSQL archives a file.
/// It holds no secret and touches no repository: it hands the agent the file it opened itself and
/// waits for the answer.
public enum WALAgentClient {
    /// Sends `name` and the open file `fileDescriptor` to the agent of `source` (at `socketPath`,
    /// default `/run/kho/wal/<source>.sock`) and waits up to `timeout` seconds for its answer.
    /// Never throws for what PostgreSQL should simply retry: those come back as `.unavailable`
    /// or `.failed`.
    public static func push(source: String, fileDescriptor: Int32, name: WALFileName, timeout: TimeInterval, socketPath: String? = nil) throws -> WALAgentAnswer {
        let path = try socketPath ?? WALAgentPaths.socket(source: source)
        let deadline = Date().addingTimeInterval(timeout)
        let fd: Int32
        switch try WALSocket.connect(to: path, timeout: timeout) {
        case .connected(let connected):
            fd = connected
        case .unreachable(let code):
            let reason = String(cString: strerror(code))
            return .unavailable("No WAL agent answers at \(path) (\(reason)): start `kho wal serve --source \(source)` (or kho daemon) as root; PostgreSQL keeps the file and retries.")
        }
        defer { close(fd) }
        do {
            try WALSocket.send(fd, WALAgentProtocol.request(name: name), descriptor: fileDescriptor)
            let left = deadline.timeIntervalSinceNow
            guard left > 0, try WALSocket.waitReadable(fd, timeout: left) else {
                return .unavailable("The WAL agent at \(path) did not answer within \(Int(timeout.rounded())) s for \(name): check `kho wal serve`'s log and the storage; PostgreSQL retries.")
            }
            let message = try WALSocket.receive(fd, limit: WALAgentProtocol.answerLimit, maxDescriptors: 1)
            for descriptor in message.descriptors { close(descriptor) }
            if message.bytes.isEmpty {
                return .unavailable("The WAL agent at \(path) closed the connection without an answer for \(name) (it stopped or restarted): PostgreSQL retries.")
            }
            return WALAgentProtocol.parseAnswer(message.bytes)
        } catch let error as KhoError {
            return .unavailable("Talking to the WAL agent at \(path) failed (\(error.message)): PostgreSQL retries.")
        }
    }
}
