import Foundation
import KhoSupport

/// The kinds of object a schema fingerprint records. The raw values are written into snapshots.
public enum SchemaObjectKind: String, Codable, Sendable, CaseIterable, Comparable {
    /// The database's own properties (owner, encoding, collation, ACL, comment, settings …): one
    /// object per property, named by the property.
    case databaseProperty = "database-property"
    case schema
    case table
    case column
    case index
    case constraint
    case view
    case materializedView = "materialized-view"
    case function
    case procedure
    case aggregate
    case trigger
    case sequence
    case type
    case domain
    case `extension`
    /// A privilege granted on an object of the database (or on the database), named by the object
    /// and the grantee.
    case grant
    case policy
    case rule
    case event
    /// A PostgreSQL event trigger (`CREATE EVENT TRIGGER`): per database, fired by DDL.
    case eventTrigger = "event-trigger"
    /// A role (PostgreSQL) or user (MariaDB) the database needs: attributes and memberships.
    case role
    case user

    public static func < (a: SchemaObjectKind, b: SchemaObjectKind) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What a database's schema was, read from the server's catalogs in the same snapshot as the dump:
/// every object the restore must bring back, each with the text that must be equal afterwards.
/// Stored as a JSON file beside the dump (`DumpManifest.Database.schemaFile`).
public struct SchemaFingerprint: Codable, Sendable, Equatable {
    public struct Object: Codable, Sendable, Equatable, Hashable {
        public var kind: SchemaObjectKind
        /// The object's identity, unique within its kind: schema-qualified, with the table for
        /// columns, indexes, constraints and triggers, with argument types for functions.
        public var name: String
        /// Everything about the object that a faithful restore keeps, as the server describes it.
        public var definition: String
        public init(kind: SchemaObjectKind, name: String, definition: String) {
            self.kind = kind; self.name = name; self.definition = definition
        }
    }

    /// The fingerprint's format; 1 is the first.
    public var version: Int
    public var engine: SourceKind
    public var objects: [Object]

    public init(engine: SourceKind, objects: [Object]) {
        self.version = 1
        self.engine = engine
        self.objects = objects.sorted { ($0.kind, $0.name) < ($1.kind, $1.name) }
    }

    /// A SHA-256 over the canonical JSON, for the manifest and the evidence.
    public var digest: String {
        get throws { try SHA256.hash(Array(try JSON.encoder.encode(self))).hex }
    }

    public func encoded() throws -> [UInt8] { Array(try JSON.encoder.encode(self)) }

    public static func decode(_ bytes: [UInt8], file: String) throws -> SchemaFingerprint {
        do {
            return try JSON.decoder.decode(SchemaFingerprint.self, from: Data(bytes))
        } catch {
            throw KhoError(.integrity, "The schema fingerprint \(file) of the snapshot cannot be read (\(error)): run `kho check --read-data`; a kho newer than this one may have written it.")
        }
    }
}

/// Object by object, what a restored database has against the fingerprint recorded at backup.
public struct SchemaComparison: Codable, Sendable, Equatable {
    public enum Outcome: String, Codable, Sendable {
        case missing, extra, different
    }

    public struct Difference: Codable, Sendable, Equatable {
        public var kind: SchemaObjectKind
        public var name: String
        public var outcome: Outcome
        public var expected: String?
        public var actual: String?

        /// One line for a person: "index public.t_idx is missing", "sequence public.s differs: … → …".
        public var sentence: String {
            let what = "\(kind.rawValue.replacingOccurrences(of: "-", with: " ")) \(name)"
            switch outcome {
            case .missing: return "\(what) is missing after the restore"
            case .extra: return "\(what) was not in the snapshot"
            case .different: return "\(what) differs: \(SchemaComparison.clip(expected ?? "")) → \(SchemaComparison.clip(actual ?? ""))"
            }
        }
    }

    /// How many objects of the fingerprint were compared.
    public var compared: Int
    public var differences: [Difference]
    public var equal: Bool { differences.isEmpty }

    /// Compares by (kind, name). `ignoring` leaves out kinds the restore does not bring back on
    /// this target (for example roles that already existed and were kept as they are).
    public init(expected: SchemaFingerprint, actual: SchemaFingerprint, ignoring: Set<SchemaObjectKind> = []) {
        struct Key: Hashable { var kind: SchemaObjectKind; var name: String }
        var found: [Key: SchemaFingerprint.Object] = [:]
        for object in actual.objects where !ignoring.contains(object.kind) { found[Key(kind: object.kind, name: object.name)] = object }
        var differences: [Difference] = []
        var compared = 0
        for object in expected.objects where !ignoring.contains(object.kind) {
            compared += 1
            let key = Key(kind: object.kind, name: object.name)
            guard let other = found.removeValue(forKey: key) else {
                differences.append(Difference(kind: object.kind, name: object.name, outcome: .missing, expected: object.definition, actual: nil))
                continue
            }
            if other.definition != object.definition {
                differences.append(Difference(kind: object.kind, name: object.name, outcome: .different, expected: object.definition, actual: other.definition))
            }
        }
        for object in found.values.sorted(by: { ($0.kind, $0.name) < ($1.kind, $1.name) }) {
            differences.append(Difference(kind: object.kind, name: object.name, outcome: .extra, expected: nil, actual: object.definition))
        }
        self.compared = compared
        self.differences = differences
    }

    static func clip(_ text: String) -> String {
        let flat = text.replacingOccurrences(of: "\n", with: " ")
        return flat.count <= 160 ? flat : String(flat.prefix(157)) + "…"
    }
}
