import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

/// `kho binlog ls`: what a source's binary log archive holds, file by file, and its gaps.
struct BinlogLs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List a source's archived binary log: files, bytes, first and last event, gaps."
    )

    @OptionGroup var repository: RepositoryOptions
    @Option(help: "The policy source whose archive to list.") var source: String
    @Flag(name: .customLong("no-times"), help: "Do not open each file's first and last piece for its event times.") var noTimes = false
    @Flag(help: "Print as JSON.") var json = false

    func validate() throws {
        try Wal.checkSource(source)
    }

    func run() throws {
        let summary = try BinlogArchive(repository: try repository.open(), source: source).summary(times: !noTimes)
        if json {
            try Terminal.json(summary)
        } else if let record = summary.record {
            Terminal.out("source \(summary.source)  archive binlog/\(summary.archive)  server_id \(record.serverId)  gtid_domain_id \(record.gtidDomainId)  files \(record.basename).*  MariaDB \(record.serverVersion)  since \(record.created) from \(record.host)")
            if summary.files.isEmpty { Terminal.out("  no files archived") }
            for file in summary.files {
                var line = "  \(file.file)  \(Format.bytes(Int64(file.bytes)))  \(file.pieces) pieces, \(Format.bytes(Int64(file.storedBytes))) stored"
                line += file.whole ? ", whole" : ", growing"
                if let first = file.firstEvent, let last = file.lastEvent { line += ", events \(first) … \(last)" }
                Terminal.out(line)
            }
            for gap in summary.gaps { Terminal.out("  gap: \(gap)") }
            for stray in summary.strays { Terminal.out("  not a file kho stores: binlog/\(stray)") }
        } else {
            Terminal.out("no binary log archived for source \(summary.source)")
        }
        if !summary.gaps.isEmpty || !summary.strays.isEmpty { throw ExitStatus(.integrity) }
    }
}
