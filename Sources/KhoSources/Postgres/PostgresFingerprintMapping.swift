import Foundation
import KhoCore
import KhoSupport

/// Turns the fingerprint recorded at backup into the one a restore should have brought back, and
/// leaves out of both what the restore keeps as it is on purpose.
///
/// - Roles mapped with --map-role carry their new names, wherever a definition names a role
///   (owners, grantees, grantors, policy roles, memberships, role settings).
/// - Tablespaces carry the names they were mapped to (a drill's scratch cluster maps every one it
///   lacks to pg_default); an object in the restored database's default tablespace names none, as
///   the server records it.
/// - A role that existed on the target was kept as it is: it is compared as it is there (its
///   object is taken from the restored side), and roles of the target that the snapshot does not
///   name are left out. Only the roles the restore created are compared with the snapshot's.
struct PostgresFingerprintMapping {
    var roleMap: [String: String]
    var tablespaceMap: [String: String]
    var existingTablespaces: Set<String>
    /// Target names of the roles the restore created.
    var createdRoles: Set<String>

    func role(_ name: String) -> String { roleMap[name] ?? name }

    func tablespace(_ name: String) -> String {
        tablespaceMap[name] ?? (existingTablespaces.contains(name) ? name : "pg_default")
    }

    func adjust(expected recorded: SchemaFingerprint, actual: SchemaFingerprint) throws -> (expected: SchemaFingerprint, actual: SchemaFingerprint) {
        var recordedDefault = "pg_default"
        if let property = recorded.objects.first(where: { $0.kind == .databaseProperty && $0.name == "tablespace" }),
           let value = try PostgresFingerprint.decode(property.definition)["value"]?.text {
            recordedDefault = value
        }
        let newDefault = tablespace(recordedDefault)
        var expected: [SchemaFingerprint.Object] = []
        for object in recorded.objects {
            var definition = try PostgresFingerprint.decode(object.definition)
            for key in PostgresFingerprint.roleKeys {
                switch definition[key] {
                case .string(let name) where name != "PUBLIC": definition[key] = .string(role(name))
                case .array(let list):
                    definition[key] = .array(list.map { item in
                        if case .string(let name) = item, name != "PUBLIC" { return .string(role(name)) }
                        return item
                    })
                default: break
                }
            }
            var name = object.name
            switch object.kind {
            case .databaseProperty:
                if object.name == "tablespace" { definition["value"] = .string(newDefault) }
                if definition["role"] != nil { name = PostgresFingerprint.roleSettingsName(definition) }
            case .grant:
                name = PostgresFingerprint.grantName(definition)
            case .role:
                name = definition["role"]?.text ?? role(object.name)
            default:
                if let space = definition["tablespace"]?.text {
                    let mapped = tablespace(space)
                    definition["tablespace"] = mapped == newDefault ? nil : .string(mapped)
                }
            }
            expected.append(try PostgresFingerprint.object(object.kind, name: name, definition))
        }
        var actualRoles: [String: SchemaFingerprint.Object] = [:]
        for object in actual.objects where object.kind == .role { actualRoles[object.name] = object }
        expected = expected.compactMap { object in
            guard object.kind == .role, !createdRoles.contains(object.name) else { return object }
            return actualRoles[object.name]
        }
        let expectedRoles = Set(expected.filter { $0.kind == .role }.map(\.name))
        let actualObjects = actual.objects.filter { $0.kind != .role || createdRoles.contains($0.name) || expectedRoles.contains($0.name) }
        return (SchemaFingerprint(engine: recorded.engine, objects: expected), SchemaFingerprint(engine: actual.engine, objects: actualObjects))
    }
}
