import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Snapshots: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots", abstract: "List the snapshots in the repository, oldest first.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Only snapshots of this host.")
    var host: String?

    @Option(help: "Only snapshots with this tag (repeatable: all must match).")
    var tag: [String] = []

    @OptionGroup var zone: TimeZoneOption

    @Flag(help: "Print the snapshots as JSON (times in RFC 3339, UTC).")
    var json = false

    func run() throws {
        let repo = try repository.open()
        let snapshots = try repo.listSnapshots().filter { snapshot in
            (host == nil || snapshot.hostname == host) && tag.allSatisfy(snapshot.tags.contains)
        }
        if json {
            try Terminal.json(snapshots.map(SnapshotJSON.init))
            return
        }
        let zone = try self.zone.zone()
        let times = snapshots.map { Format.time($0.time, zone) }
        // The header names the zone; every time carries its offset.
        let header = "Time (\(DisplayZone.name(of: zone)))"
        let width = ([header.count] + times.map(\.count)).max()!
        Terminal.out(row("ID", header, "Host", "Size", "Source", width: width))
        for (s, time) in zip(snapshots, times) {
            let what = s.source.sourceKind == .files ? s.paths.joined(separator: " ") : "\(s.source.kind):\(s.source.name ?? "")"
            let flags = (s.partial ? " (partial)" : "") + (s.tags.isEmpty ? "" : " [\(s.tags.joined(separator: ","))]")
            Terminal.out(row(s.shortID, time, s.hostname, Format.bytes(s.summary?.totalSize ?? 0), what + flags, width: width))
        }
        Terminal.out("\(snapshots.count) snapshots")
    }

    private func row(_ id: String, _ time: String, _ host: String, _ size: String, _ what: String, width: Int) -> String {
        id.rightPad(9) + " " + time.rightPad(width) + " " + host.rightPad(16) + " " + size.leftPad(11) + "  " + what
    }
}

/// A snapshot as printed by `--json`: the stored fields plus its ID.
struct SnapshotJSON: Encodable {
    var id: String
    var shortID: String
    var time: Date
    var tree: String
    var paths: [String]
    var hostname: String
    var username: String
    var tags: [String]
    var parent: String?
    var source: SnapshotSource
    var partial: Bool
    var summary: BackupSummary?
    var manifest: JSONValue?

    init(_ s: Snapshot) {
        id = s.id ?? ""
        shortID = s.shortID
        time = s.time
        tree = s.tree
        paths = s.paths
        hostname = s.hostname
        username = s.username
        tags = s.tags
        parent = s.parent
        source = s.source
        partial = s.partial
        summary = s.summary
        manifest = s.manifest
    }
}
