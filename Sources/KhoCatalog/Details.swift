import Foundation
import KhoCore
import KhoSupport

/// The short form of a manifest kept in the catalog: tables and rows per database.
public struct ManifestSummary: Codable, Sendable {
    public var engine: String
    public var databases: [String: Int]
    public var tables: Int
    public var rows: Int64

    public init(_ manifest: DumpManifest) {
        engine = manifest.engine
        databases = Dictionary(manifest.databases.map { ($0.name, $0.tables.count) }, uniquingKeysWith: { a, _ in a })
        tables = manifest.databases.reduce(0) { $0 + $1.tables.count }
        rows = manifest.databases.reduce(Int64(0)) { $0 + $1.tables.reduce(Int64(0)) { $0 + $1.rows } }
    }
}

/// What a copy run records in the catalog's details: where the snapshot went and what it cost.
public struct CopyDetails: Codable, Sendable {
    public var destination: String
    public var targetSnapshot: String?
    public var blobsRead: Int
    public var blobsNew: Int
    public var bytesAdded: Int64
    public var alreadyThere: Bool
    /// True for a snapshot of an earlier run that the destination lacked (catch-up).
    public var caughtUp: Bool?

    public init(destination: String, targetSnapshot: String?, blobsRead: Int, blobsNew: Int, bytesAdded: Int64, alreadyThere: Bool,
                caughtUp: Bool? = nil) {
        self.destination = destination
        self.targetSnapshot = targetSnapshot
        self.blobsRead = blobsRead
        self.blobsNew = blobsNew
        self.bytesAdded = bytesAdded
        self.alreadyThere = alreadyThere
        self.caughtUp = caughtUp
    }
}

extension RunRecord {
    /// The details as JSON text, for `details`.
    public static func encodeDetails<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSON.encoder.encode(value), as: UTF8.self)
    }
}
