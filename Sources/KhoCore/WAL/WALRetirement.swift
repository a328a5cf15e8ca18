import Foundation
import KhoSupport

/// `wal/<sysid>/retired`: written by `kho wal adopt` when a source's archive moves to another
/// cluster (after `pg_upgrade`, or a rebuilt cluster), so that the old cluster's pushes are refused
/// from then on. Archive records are never rewritten, so retirement is a file of its own.
///
/// It is sealed like every other object under `wal/` (FORMAT 20.3): `kho check`'s nonce census
/// reads the nonce of every one of them, and a marker planted by whoever can write the storage
/// must not be able to stop archiving silently: one that does not open is an integrity error.
public struct WALRetirement: Codable, Equatable, Sendable {
    /// The retired cluster, 16 lower-case hex digits; must equal the path's.
    public var cluster: String
    /// The source whose archive it was.
    public var source: String
    public var retired: String
    public var host: String

    public init(cluster: SystemIdentifier, source: String, retired: Date, host: String) {
        self.cluster = cluster.description
        self.source = source
        self.retired = Timestamp.format(retired)
        self.host = host
    }

    public static func handle(cluster: SystemIdentifier) -> Handle { Handle(.wal, "\(cluster)/retired") }

    /// `kho/wal:<sysid>/retired-marker`: 39 bytes, never a blob ID's 32, and no WAL file is
    /// called `retired-marker`, so no other object's seal opens under it.
    static func context(cluster: SystemIdentifier) -> [UInt8] {
        Array("kho/wal:\(cluster)/retired-marker".utf8)
    }

    package func seal(sealer: Sealer) throws -> [UInt8] {
        let cluster = try SystemIdentifier(parsing: self.cluster)
        return try sealer.seal([0] + Array(try JSON.encoder.encode(self)), context: Self.context(cluster: cluster))
    }

    package static func open(_ sealed: [UInt8], cluster: SystemIdentifier, sealer: Sealer) throws -> WALRetirement {
        let path = handle(cluster: cluster).path
        guard let plain = try sealer.open(sealed, context: context(cluster: cluster)), plain.first == 0 else {
            throw KhoError(.integrity, "\(path) does not authenticate as that cluster's retirement (damaged, not of this repository, or another object saved under its name): run `kho check`; remove it only if no `kho wal adopt` retired that cluster.")
        }
        let marker: WALRetirement
        do {
            marker = try JSON.decoder.decode(WALRetirement.self, from: Data(plain[1...]))
        } catch {
            throw KhoError(.integrity, "\(path) authenticates but is not a retirement kho can read (\(error)): it was written by a newer or faulty kho; upgrade kho, or run `kho check`.")
        }
        guard marker.cluster == cluster.description else {
            throw KhoError(.integrity, "\(path) names cluster \(marker.cluster), not \(cluster): it was written by a faulty kho; run `kho check`.")
        }
        return marker
    }
}

extension Repository {
    public func sealWALRetirement(_ marker: WALRetirement) throws -> [UInt8] { try marker.seal(sealer: try makeSealer()) }

    public func openWALRetirement(_ sealed: [UInt8], cluster: SystemIdentifier) throws -> WALRetirement {
        try WALRetirement.open(sealed, cluster: cluster, sealer: try makeSealer())
    }
}
