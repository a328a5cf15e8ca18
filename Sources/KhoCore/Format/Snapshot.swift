import Foundation
import KhoSupport

/// Any JSON value; used for the dump manifest, whose shape belongs to the source that wrote it.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        // try?: each failed attempt only means "not this JSON type"; the last one throws.
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// What a backup did, stored in the snapshot and printed by `kho backup`.
public struct BackupSummary: Codable, Sendable, Equatable {
    public var filesNew = 0
    public var filesChanged = 0
    public var filesUnchanged = 0
    public var directories = 0
    public var otherEntries = 0
    /// Bytes of file content read from the source.
    public var bytesRead: Int64 = 0
    /// Total size of the files in the snapshot, read or not.
    public var totalSize: Int64 = 0
    public var blobsNew = 0
    /// Bytes of new blobs before compression.
    public var bytesNewRaw: Int64 = 0
    /// Bytes added to the repository after dedup, compression and encryption.
    public var bytesAdded: Int64 = 0
    public var packsWritten = 0
    public var warnings = 0
    public var start = Date()
    public var end = Date()

    public init() {}

    public var duration: Double { end.timeIntervalSince(start) }
}

public struct SnapshotSource: Codable, Sendable, Equatable {
    /// `files`, `stdin` or `command`, or a database engine for sources of that kind.
    public var kind: String
    /// The source name: the stdin name, or the policy's source name.
    public var name: String?
    public init(kind: String, name: String? = nil) { self.kind = kind; self.name = name }
}

public struct Snapshot: Codable, Sendable {
    /// The snapshot file's name; not stored inside it.
    public var id: String?
    public var time: Date
    public var tree: String
    public var paths: [String]
    public var hostname: String
    public var username: String
    public var tags: [String]
    public var parent: String?
    public var source: SnapshotSource
    /// True when some files could not be read; the snapshot holds everything else.
    public var partial: Bool
    public var summary: BackupSummary?
    /// The dump manifest of a database source: tables, row counts, checksums, server facts.
    public var manifest: JSONValue?
    public var keyID: String?

    enum CodingKeys: String, CodingKey {
        case time, tree, paths, hostname, username, tags, parent, source, partial, summary, manifest
        case keyID = "key"
    }

    public init(time: Date, tree: BlobID, paths: [String], hostname: String, username: String, tags: [String],
                parent: String?, source: SnapshotSource, partial: Bool, summary: BackupSummary?, manifest: JSONValue?) {
        self.time = time
        self.tree = tree.hex
        self.paths = paths
        self.hostname = hostname
        self.username = username
        self.tags = tags
        self.parent = parent
        self.source = source
        self.partial = partial
        self.summary = summary
        self.manifest = manifest
    }

    public var treeID: BlobID? { BlobID(hex: tree) }
    public var shortID: String { String((id ?? "").prefix(8)) }
}
