import Foundation
import KhoSupport

/// What a database restore reads its dump and the small files beside it from: a stored snapshot
/// (`SnapshotFiles`), or a database read live in an exported snapshot (`LiveDumpFiles`, the
/// database of a cluster recovered to a point in time), so that both take the one restore path.
public protocol DumpFiles {
    /// The file's size, or nil when there is no such file or its size is known only once streamed.
    func size(_ name: String) -> Int64?
    /// Streams the file's bytes, in order, to `write`.
    func stream(_ name: String, _ write: (UnsafeRawBufferPointer) throws -> Void) throws
    /// The whole file, refused beyond `limit` bytes (for the small JSON files beside a dump).
    func read(_ name: String, limit: Int) throws -> [UInt8]
}
