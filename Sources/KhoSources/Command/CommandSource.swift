import Foundation
import KhoCore
import KhoSupport

/// Any command whose standard output is the dump (engines kho does not know). Its restore command
/// reads the dump on standard input.
public struct CommandSource: BackupSource {
    public var name: String
    public var command: String
    public var restoreCommand: String?
    public var limits: SourceLimits
    public var kind: SourceKind { .command }
    public var summary: String { "command `\(Secrets.maskCommand(command))`" }

    public init(name: String, command: String, restoreCommand: String? = nil, limits: SourceLimits = SourceLimits()) {
        self.name = name
        self.command = command
        self.restoreCommand = restoreCommand
        self.limits = limits
    }

    public func dumpPlan() throws -> DumpPlan {
        let input = Archiver.StreamInput(name: name) {
            let stream = CommandStream(command: command, displayName: "source \(name): \(command)", timeout: limits.timeout)
            try stream.start()
            return ({ try stream.read($0) }, { try stream.finish() })
        }
        return DumpPlan(streams: [input])
    }
}
