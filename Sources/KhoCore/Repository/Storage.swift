import Foundation
import KhoSupport

/// The kinds of files a repository holds, each in its own folder.
public enum FileKind: String, Sendable, CaseIterable, Codable {
    case config, key, data, index, snapshot, lock
    /// Heads of audit ledgers that used this repository (see docs/FORMAT.md, "Ledger anchors").
    case anchor
    /// The evidence of restore drills of this repository's snapshots, so that `kho catalog rebuild`
    /// can bring drill records back (see docs/FORMAT.md, "Drill evidence").
    case drill
    /// Archived PostgreSQL WAL (see docs/FORMAT.md, "Archived WAL"): named by identity, not by
    /// content, in nested folders `wal/<sysid>/<timeline+log>/`.
    case wal
    /// Archived MariaDB binary logs (see docs/FORMAT.md, "Archived binary logs"): named by
    /// identity, in nested folders `binlog/<archive>/<file>/`.
    case binlog

    /// Whether files of this kind live in nested folders (named by identity, not content).
    public var hasNestedFolders: Bool { self == .wal || self == .binlog }

    /// The folder (or key prefix) the kind lives under; `config` is a single file at the top.
    public var folder: String {
        switch self {
        case .config: return ""
        case .key: return "keys"
        case .data: return "data"
        case .index: return "index"
        case .snapshot: return "snapshots"
        case .lock: return "locks"
        case .anchor: return "anchors"
        case .drill: return "drills"
        case .wal: return "wal"
        case .binlog: return "binlog"
        }
    }

    /// The largest file of this kind the format allows (with room to spare). A read of more is
    /// refused before anything is allocated: a file planted by whoever can write the storage
    /// cannot make kho read gigabytes into memory.
    public var maximumSize: Int {
        switch self {
        case .config, .key, .lock: return 64 << 10
        case .anchor: return 1 << 20
        // Checks' output is bounded, but a manifest comparison has a row per table.
        case .drill: return 16 << 20
        case .snapshot: return 64 << 20
        // Up to 512 MiB of blobs plus a header; index files list many packs' blobs.
        case .data, .index: return 1 << 30
        // One sealed segment of at most 64 MiB (larger segment sizes are refused at set-up, as
        // the object is sealed in memory) plus its metadata and the seal.
        case .wal: return (64 << 20) + (1 << 20)
        // One sealed piece of a binary log file (at most 64 MiB of events) plus its metadata.
        case .binlog: return (64 << 20) + (1 << 20)
        }
    }

    /// The integrity error for a file larger than its kind allows.
    public func tooLarge(_ handle: Handle, size: Int, in location: String) -> KhoError {
        KhoError(.integrity, "\(handle.path) in \(location) is \(size) bytes, more than a \(rawValue) file of a kho repository can be (\(maximumSize) bytes): it was not written by kho; remove it after checking what put it there.")
    }
}

/// One stored file: its kind and its name (64 hex digits, or `config`; for `wal`, a relative path
/// such as `<sysid>/<timeline+log>/<segment>` that `WALFileName` built and checked).
public struct Handle: Hashable, Sendable, CustomStringConvertible {
    public var kind: FileKind
    public var name: String

    public init(_ kind: FileKind, _ name: String) {
        self.kind = kind
        self.name = name
    }

    public static let config = Handle(.config, "config")

    /// Where the file lives relative to the repository root.
    public var path: String {
        switch kind {
        case .config: return "config"
        case .data: return "data/\(name.prefix(2))/\(name)"
        default: return "\(kind.folder)/\(name)"
        }
    }

    public var description: String { path }

    /// Whether the name is the SHA-256 (lowercase hex) of the file's stored bytes, as for every
    /// kind but the config and locks.
    public var isNamedByContent: Bool {
        switch kind {
        case .key, .data, .index, .snapshot, .anchor, .drill:
            return name.utf8.count == 64 && name.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
        case .config, .lock:
            return false
        // WAL objects are named by identity; their AAD binds the name instead (FORMAT 20).
        case .wal, .binlog:
            return false
        }
    }
}

public struct StoredFile: Hashable, Sendable {
    public var name: String
    public var size: Int
    /// When the storage last wrote the file, by the storage's clock; nil where it does not say.
    public var modified: Date?
    public init(name: String, size: Int, modified: Date? = nil) { self.name = name; self.size = size; self.modified = modified }

    // A file is its name and size; when it was written is information about it, not part of it.
    public static func == (a: StoredFile, b: StoredFile) -> Bool { a.name == b.name && a.size == b.size }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(size)
    }
}

/// Where a repository's files are kept. As small as a filesystem: every implementation passes the
/// same conformance suite, and the engine never assumes more than these five verbs.
///
/// `save` is atomic: a reader sees either no file or the whole file, also after a crash. Saving a
/// name that exists replaces it (only locks are ever saved twice). `load` with a length reads
/// exactly that many bytes or throws.
public protocol Storage: Sendable {
    /// A human-readable location, for messages.
    var location: String { get }
    func save(_ handle: Handle, data: [UInt8]) throws
    func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8]
    func stat(_ handle: Handle) throws -> StoredFile
    func list(_ kind: FileKind) throws -> [StoredFile]
    func remove(_ handle: Handle) throws
    /// Whether anything is stored at this location at all (used by `init` to refuse a used place).
    func isEmpty() throws -> Bool
    /// A writer for a file whose name is known only once it is complete (a pack is named by the
    /// hash of its bytes), so that the file need not be held in memory; nil when this storage can
    /// only save whole files.
    func makeStreamWriter(for kind: FileKind) throws -> (any StorageStreamWriter)?
    /// Whether every read is a request to a server (object storage), so that readers should
    /// gather what they need into fewer, larger reads even at the cost of bytes read for nothing.
    var readsAreRequests: Bool { get }
    /// Saves the file only if nothing is stored under its name, and never replaces what is:
    /// true when this call stored it, false when the name was taken. Returns only once the file
    /// is as durable as after `save`. PostgreSQL requires an archive that never overwrites.
    ///
    /// False means "something is stored under this name", not "someone else wrote it": a request
    /// retried after a lost answer can find the object its own first attempt stored. Callers
    /// compare the stored content with theirs.
    func saveIfAbsent(_ handle: Handle, data: [UInt8]) throws -> Bool
    /// Every file of `kind` whose path lies below the folder `under` (relative to the kind's
    /// folder, e.g. `<sysid>` or `<sysid>/000000010000000A`), at any depth, with names relative to
    /// the kind's folder, so that `Handle(kind, file.name)` reads it. An empty `under` lists the
    /// whole kind.
    func list(_ kind: FileKind, under folder: String) throws -> [StoredFile]
}

/// Writes a file piece by piece; `commit` gives it its name atomically, `abort` leaves nothing.
public protocol StorageStreamWriter: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    func commit(as handle: Handle) throws
    func abort()
}

extension Storage {
    public func makeStreamWriter(for kind: FileKind) throws -> (any StorageStreamWriter)? { nil }
    public var readsAreRequests: Bool { false }

    public func load(_ handle: Handle) throws -> [UInt8] {
        try load(handle, offset: 0, length: nil)
    }

    /// Look, then save: correct for one writer per name, but two writers racing for one name can
    /// both see it absent and the second replaces the first. Every storage kho ships overrides
    /// this with an atomic no-replace write; the default exists for storages used in tests.
    public func saveIfAbsent(_ handle: Handle, data: [UInt8]) throws -> Bool {
        if try exists(handle) { return false }
        try save(handle, data: data)
        return true
    }

    /// Filters the kind's whole listing: correct but not cheaper; storages override it with a
    /// listing of the folder alone.
    public func list(_ kind: FileKind, under folder: String) throws -> [StoredFile] {
        let prefix = try StorageFolder.prefix(folder)
        return try list(kind).filter { $0.name.hasPrefix(prefix) }
    }
}

/// Checks of the relative folders that `list(_:under:)` takes.
public enum StorageFolder {
    /// `folder` with a trailing `/` (empty for the whole kind), after refusing what could leave
    /// the kind's folder: an absolute path, `.` or `..` components, empty components, or bytes
    /// outside printable ASCII.
    public static func prefix(_ folder: String) throws -> String {
        if folder.isEmpty { return "" }
        let parts = folder.split(separator: "/", omittingEmptySubsequences: false)
        let printable = folder.utf8.allSatisfy { (0x21...0x7e).contains($0) && $0 != UInt8(ascii: "\\") }
        guard printable, !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." || $0.hasPrefix(".") }) else {
            throw KhoError(.usage, "\"\(folder)\" is not a folder inside a repository (it must be names without spaces joined by /, none empty or starting with a dot): this is a bug in the caller; report it.")
        }
        return folder + "/"
    }
}

extension Storage {
    /// False when the file is missing; a storage that cannot say (permissions, I/O, a server
    /// error) throws, rather than have its failure read as "missing".
    public func exists(_ handle: Handle) throws -> Bool {
        do {
            _ = try stat(handle)
            return true
        } catch let error as KhoError where error.kind == .integrity {
            return false
        }
    }
}

extension KhoError {
    public static func missing(_ handle: Handle, in location: String) -> KhoError {
        KhoError(.integrity, "\(handle.path) is missing from the repository at \(location): run `kho check` to see which snapshots it affects.")
    }
}
