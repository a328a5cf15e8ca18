import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoPolicy
import KhoSupport

/// `kho wal push-agent`: the agent's client as PostgreSQL's archive_command. Temporary and hidden:
/// it is what `kho wal push` (without --direct) does, and goes once that command calls
/// `WALAgentClient.push` itself.
struct WalPushAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push-agent",
        abstract: "Hand a WAL file to the running `kho wal serve` (archive_command).",
        shouldDisplay: false
    )

    @Option(help: "The policy source the cluster's archive belongs to.") var source: String
    @Option(help: "The agent's socket. Default: /run/kho/wal/<source>.sock.") var socket: String?
    @Option(help: "How long to wait for the agent, e.g. 60s.") var timeout = "60s"
    @Argument(help: "PostgreSQL's %p: the file's path, relative to the data directory.") var path: String

    func run() throws {
        let seconds = try DurationText.parse(timeout, option: "--timeout")
        let base = path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
        let name = try WALFileName(parsing: base)
        // Opened here, as the cluster's user: the agent reads only this descriptor, never a path.
        let fd = try Syscall.call("open", path) { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) }
        defer { close(fd) }
        let answer = try WALAgentClient.push(source: source, fileDescriptor: fd, name: name, timeout: seconds, socketPath: socket)
        if case .ok = answer { return }
        Terminal.error(answer.message)
        throw ExitStatus(answer.exitCode)
    }
}
