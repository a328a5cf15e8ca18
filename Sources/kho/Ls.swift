import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the files in a snapshot, and its dump manifest.")

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Snapshot: `latest`, an ID or a unique prefix.")
    var snapshot: String

    @Argument(help: "Folder or file inside the snapshot (default: everything).")
    var path: String = "/"

    @OptionGroup var zone: TimeZoneOption

    @Flag(help: "Print the listing as JSON (times in RFC 3339, UTC).")
    var json = false

    struct Entry: Encodable {
        var path: String
        var kind: String
        var mode: String
        var uid: UInt32
        var gid: UInt32
        var size: UInt64
        var mtime: Date
        var linkTarget: String?
        var blobs: Int?
    }

    struct Output: Encodable {
        var snapshot: SnapshotJSON
        var entries: [Entry]
    }

    func run() throws {
        let zone = try self.zone.zone()
        let repo = try repository.open()
        let index = try repo.loadIndex()
        let snap = try repo.findSnapshot(snapshot)
        let lookup = try TreeLookup(repository: repo, index: index)
        let start = try lookup.node(at: path, in: snap)
        var entries: [Entry] = []
        let base = path == "/" ? "/" : "/" + path.split(separator: "/").joined(separator: "/")
        try lookup.walk(start, path: base) { path, node in
            let mtime = Date(timeIntervalSince1970: Double(node.mtime.seconds) + Double(node.mtime.nanoseconds) / 1e9)
            let entry = Entry(path: path, kind: node.kind.name, mode: ModeString.describe(node) + String(format: " (%04o)", node.mode),
                              uid: node.uid, gid: node.gid, size: node.size, mtime: mtime,
                              linkTarget: node.kind == .symlink ? String(decoding: node.linkTarget, as: UTF8.self) : nil,
                              blobs: node.kind == .file ? node.content.count : nil)
            if json {
                entries.append(entry)
            } else {
                var line = "\(ModeString.describe(node)) \(node.uid)/\(node.gid) \(String(node.size).leftPad(12)) \(Format.time(mtime, zone)) \(path)"
                if let target = entry.linkTarget { line += " -> \(target)" }
                Terminal.out(line)
            }
        }
        if json {
            try Terminal.json(Output(snapshot: SnapshotJSON(snap), entries: entries))
        } else if let manifest = snap.manifest {
            Terminal.out("dump manifest:")
            let data = try JSON.prettyEncoder.encode(manifest)
            Terminal.out(String(decoding: data, as: UTF8.self))
        }
    }
}

extension String {
    func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

extension String {
    func rightPad(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
