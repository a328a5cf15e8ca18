import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

extension Wal {
    /// What is archived: per cluster and timeline the first and last segment, the count, the
    /// stored bytes, and the holes between first and last.
    struct Ls: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "List archived WAL: clusters, timelines, first and last segment, gaps."
        )

        @OptionGroup var repository: RepositoryOptions

        @Option(help: "Only this policy source's clusters (default: every cluster).")
        var source: String?

        @Flag(help: "Print as JSON.") var json = false

        func validate() throws {
            if let source { try Wal.checkSource(source) }
        }

        func run() throws {
            let clusters = try WALClusterSummary.list(source: source, in: try repository.open())
            if json {
                try Terminal.json(clusters)
                return
            }
            if clusters.isEmpty {
                Terminal.out(source.map { "no WAL archived for source \($0)" } ?? "no WAL archived")
                return
            }
            for summary in clusters {
                let record = summary.record
                var head = "cluster \(record.cluster)  source \(record.source)  PostgreSQL \(record.serverVersion)  \(record.segmentSize >> 20) MiB segments  since \(record.created) from \(record.host)"
                if let previous = record.previous { head += "  (replaced \(previous))" }
                if let retired = summary.retired { head += "  RETIRED \(retired.retired) by \(retired.host)" }
                Terminal.out(head)
                if summary.timelines.isEmpty { Terminal.out("  no files archived") }
                for timeline in summary.timelines {
                    var line = "  timeline \(timeline.timeline): "
                    line += timeline.segments == 0 ? "no segments" : "\(timeline.first) … \(timeline.last), \(timeline.segments) segments"
                    line += ", \(Format.bytes(timeline.storedBytes)) stored"
                    let missing = timeline.gaps.reduce(UInt64(0)) { $0 + $1.count }
                    line += timeline.gaps.isEmpty ? ", no gaps" : ", \(missing) segments missing in \(timeline.gaps.count) gaps"
                    if timeline.history { line += ", history file" }
                    if !timeline.partials.isEmpty { line += ", partial \(timeline.partials.joined(separator: " "))" }
                    if !timeline.backups.isEmpty { line += ", \(timeline.backups.count) backup history files" }
                    Terminal.out(line)
                    for gap in timeline.gaps {
                        Terminal.out("    gap: \(gap.first) … \(gap.last) (\(gap.count) missing)")
                    }
                }
                for name in summary.unexpected {
                    Terminal.out("  not a WAL file kho stores: wal/\(name)")
                }
            }
            if clusters.contains(where: { $0.timelines.contains { !$0.gaps.isEmpty } || !$0.unexpected.isEmpty }) {
                throw ExitStatus(.integrity)
            }
        }
    }
}
