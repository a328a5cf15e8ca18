import Foundation
import KhoCore
import KhoSupport

/// A MariaDB database's schema fingerprint (`SchemaFingerprint`), read from `information_schema`
/// and the database's sequences: at backup in the dump's transaction, and after a restore by the
/// same code, so that the two compare object by object.
///
/// Independent of the database's name: objects are named within the database (`table`,
/// `table.column`, `table.index`); where the server writes the database's own name into a
/// definition (a view's definition, as `information_schema.VIEWS` holds it, qualifies every table
/// as `` `db`.`t` ``), the qualifier `` `db`. `` — the name quoted as MariaDB quotes it, followed by a
/// dot — is removed, so that a copy under another name compares equal. A reference to another
/// database stays as it is. Routine, trigger and event bodies are kept as written (by their
/// SHA-256): a body that names its database explicitly names the original in a copy too.
///
/// Ordered (`SchemaFingerprint` sorts by kind and name), so the same schema gives the same bytes.
enum MariaDBSchema {
    typealias Object = SchemaFingerprint.Object

    static func fingerprint(_ connection: MariaDBConnection, database: String, globals: MariaDBGlobals) throws -> SchemaFingerprint {
        var objects: [Object] = []
        func rows(_ sql: String, _ count: Int = 1) throws -> [[String]] {
            try connection.query(sql, Array(repeating: database, count: count)).map { $0.map { $0 ?? "NULL" } }
        }
        let ownQualifier = SQLIdentifier.mariadb(database) + "."
        func local(_ text: String) -> String { text.replacingOccurrences(of: ownQualifier, with: "") }

        objects.append(Object(kind: .databaseProperty, name: "character set", definition: globals.characterSet))
        objects.append(Object(kind: .databaseProperty, name: "collation", definition: globals.collation))
        objects.append(Object(kind: .databaseProperty, name: "comment", definition: globals.comment))

        var partitions: [String: [String]] = [:]
        for row in try rows("""
            SELECT TABLE_NAME, CONCAT_WS(' ', PARTITION_METHOD, PARTITION_EXPRESSION, 'partition', PARTITION_NAME, PARTITION_DESCRIPTION,
                                         IF(SUBPARTITION_NAME IS NULL, NULL, CONCAT('subpartition ', SUBPARTITION_METHOD, ' ', SUBPARTITION_EXPRESSION, ' ', SUBPARTITION_NAME)),
                                         IF(PARTITION_COMMENT = '', NULL, CONCAT('comment ', PARTITION_COMMENT)))
            FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = ? AND PARTITION_NAME IS NOT NULL
            ORDER BY TABLE_NAME, PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION
            """) where row.count == 2 {
            partitions[row[0], default: []].append(row[1])
        }
        var sequences: [String] = []
        for row in try rows("""
            SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, ''), COALESCE(ROW_FORMAT, ''), COALESCE(TABLE_COLLATION, ''), COALESCE(CREATE_OPTIONS, ''), TABLE_COMMENT
            FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME
            """) where row.count == 7 {
            if row[1] == "SEQUENCE" { sequences.append(row[0]); continue }
            var definition = "\(row[1].lowercased()); engine \(row[2]); row format \(row[3]); collation \(row[4]); options \(row[5]); comment \(row[6])"
            if let parts = partitions[row[0]] { definition += "; partitions: " + parts.joined(separator: ", ") }
            objects.append(Object(kind: .table, name: row[0], definition: definition))
        }
        for row in try rows("""
            SELECT c.TABLE_NAME, c.COLUMN_NAME, c.ORDINAL_POSITION, c.COLUMN_TYPE, c.IS_NULLABLE, COALESCE(c.COLUMN_DEFAULT, 'no default'), c.EXTRA,
                   COALESCE(c.GENERATION_EXPRESSION, ''), COALESCE(c.CHARACTER_SET_NAME, ''), COALESCE(c.COLLATION_NAME, ''), c.COLUMN_COMMENT
            FROM information_schema.COLUMNS c JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
            WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE NOT IN ('VIEW', 'SEQUENCE') ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION
            """) where row.count == 11 {
            var definition = "position \(row[2]); \(row[3]); \(row[4] == "YES" ? "null" : "not null"); default \(row[5])"
            if !row[6].isEmpty { definition += "; \(row[6])" }
            if !row[7].isEmpty { definition += "; as (\(local(row[7])))" }
            if !row[8].isEmpty || !row[9].isEmpty { definition += "; character set \(row[8]) collation \(row[9])" }
            if !row[10].isEmpty { definition += "; comment \(row[10])" }
            objects.append(Object(kind: .column, name: "\(row[0]).\(row[1])", definition: definition))
        }

        struct Index { var unique: Bool; var type: String; var columns: [String]; var comment: String; var ignored: String }
        var indexes: [String: Index] = [:]
        var indexOrder: [String] = []
        for row in try rows("""
            SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE, COLUMN_NAME, COALESCE(SUB_PART, ''), COALESCE(COLLATION, ''), INDEX_COMMENT, IGNORED
            FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
            """) where row.count == 9 {
            let name = "\(row[0]).\(row[1])"
            let column = row[4] + (row[5].isEmpty ? "" : "(\(row[5]))") + (row[6] == "D" ? " DESC" : "")
            if indexes[name] == nil {
                indexOrder.append(name)
                indexes[name] = Index(unique: row[2] == "0", type: row[3], columns: [], comment: row[7], ignored: row[8])
            }
            indexes[name]!.columns.append(column)
        }
        for name in indexOrder {
            let index = indexes[name]!
            var definition = "\(index.unique ? "unique " : "")\(index.type) (\(index.columns.joined(separator: ", ")))"
            if index.ignored == "YES" { definition += "; ignored" }
            if !index.comment.isEmpty { definition += "; comment \(index.comment)" }
            objects.append(Object(kind: .index, name: name, definition: definition))
        }

        var foreignColumns: [String: (columns: [String], referenced: [String])] = [:]
        for row in try rows("""
            SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, COALESCE(REFERENCED_COLUMN_NAME, '')
            FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME IS NOT NULL
            ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION
            """) where row.count == 4 {
            foreignColumns["\(row[0]).\(row[1])", default: ([], [])].columns.append(row[2])
            foreignColumns["\(row[0]).\(row[1])", default: ([], [])].referenced.append(row[3])
        }
        for row in try rows("""
            SELECT TABLE_NAME, CONSTRAINT_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE
            FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? ORDER BY TABLE_NAME, CONSTRAINT_NAME
            """) where row.count == 6 {
            let name = "\(row[0]).\(row[1])"
            let columns = foreignColumns[name] ?? ([], [])
            // The referenced database only when it is another one.
            let referenced = (row[2] == database ? "" : SQLIdentifier.mariadb(row[2]) + ".") + row[3]
            objects.append(Object(kind: .constraint, name: name, definition: "foreign key (\(columns.columns.joined(separator: ", "))) references \(referenced) (\(columns.referenced.joined(separator: ", "))) on update \(row[4]) on delete \(row[5])"))
        }
        for row in try rows("""
            SELECT TABLE_NAME, CONSTRAINT_NAME, LEVEL, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
            WHERE CONSTRAINT_SCHEMA = ? ORDER BY TABLE_NAME, CONSTRAINT_NAME
            """) where row.count == 4 {
            objects.append(Object(kind: .constraint, name: "\(row[0]).\(row[1])", definition: "check (\(local(row[3]))) on the \(row[2].lowercased())"))
        }

        for row in try rows("""
            SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, IS_UPDATABLE, DEFINER, SECURITY_TYPE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, ALGORITHM
            FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME
            """) where row.count == 9 {
            objects.append(Object(kind: .view, name: row[0], definition: "\(local(row[1])); check option \(row[2]); updatable \(row[3]); definer \(row[4]); security \(row[5]); client \(row[6]); connection \(row[7]); algorithm \(row[8])"))
        }

        var parameters: [String: [String]] = [:]
        for row in try rows("""
            SELECT ROUTINE_TYPE, SPECIFIC_NAME, CONCAT_WS(' ', PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER)
            FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = ? AND ORDINAL_POSITION > 0 ORDER BY ROUTINE_TYPE, SPECIFIC_NAME, ORDINAL_POSITION
            """) where row.count == 3 {
            parameters["\(row[0]) \(row[1])", default: []].append(row[2])
        }
        for row in try rows("""
            SELECT ROUTINE_TYPE, ROUTINE_NAME, COALESCE(DTD_IDENTIFIER, ''), ROUTINE_DEFINITION, IS_DETERMINISTIC, SQL_DATA_ACCESS, SECURITY_TYPE, SQL_MODE,
                   ROUTINE_COMMENT, DEFINER, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION
            FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE, ROUTINE_NAME
            """) where row.count == 13 {
            let kind: SchemaObjectKind = row[0] == "FUNCTION" ? .function : .procedure
            let arguments = (parameters["\(row[0]) \(row[1])"] ?? []).joined(separator: ", ")
            var definition = "(\(arguments))"
            if kind == .function { definition += " returns \(row[2])" }
            if row[0] != "FUNCTION" && row[0] != "PROCEDURE" { definition = row[0].lowercased() + " " + definition }
            definition += "; body \(try digest(row[3])); deterministic \(row[4]); \(row[5]); security \(row[6]); sql mode \(row[7]); definer \(row[9]); client \(row[10]); connection \(row[11]); database collation \(row[12])"
            if !row[8].isEmpty { definition += "; comment \(row[8])" }
            objects.append(Object(kind: kind, name: row[1], definition: definition))
        }

        for row in try rows("""
            SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_STATEMENT, SQL_MODE, DEFINER,
                   CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION
            FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME
            """) where row.count == 11 {
            objects.append(Object(kind: .trigger, name: row[0], definition: "\(row[1]) \(row[2]) on \(row[3]); order \(row[4]); statement \(try digest(row[5])); sql mode \(row[6]); definer \(row[7]); client \(row[8]); connection \(row[9]); database collation \(row[10])"))
        }

        for row in try rows("""
            SELECT EVENT_NAME, STATUS, ON_COMPLETION, EVENT_TYPE, COALESCE(EXECUTE_AT, ''), COALESCE(INTERVAL_VALUE, ''), COALESCE(INTERVAL_FIELD, ''),
                   COALESCE(STARTS, ''), COALESCE(ENDS, ''), EVENT_DEFINITION, SQL_MODE, TIME_ZONE, DEFINER, EVENT_COMMENT,
                   CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION
            FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY EVENT_NAME
            """) where row.count == 17 {
            let schedule = row[3] == "ONE TIME" ? "at \(row[4])" : "every \(row[5]) \(row[6]) starts \(row[7]) ends \(row[8])"
            var definition = eventStatus(row[1]) + "; on completion \(row[2]); \(schedule); body \(try digest(row[9])); sql mode \(row[10]); time zone \(row[11]); definer \(row[12]); client \(row[14]); connection \(row[15]); database collation \(row[16])"
            if !row[13].isEmpty { definition += "; comment \(row[13])" }
            objects.append(Object(kind: .event, name: row[0], definition: definition))
        }

        let quote = SQLIdentifier.mariadb
        for sequence in sequences {
            // A plain read of the sequence's table: its state, without taking a value (NEXTVAL would).
            let values = try connection.query("SELECT next_not_cached_value, minimum_value, maximum_value, start_value, increment, cache_size, cycle_option FROM \(quote(database)).\(quote(sequence))").first ?? []
            let text = values.map { $0 ?? "NULL" }
            guard text.count == 7 else { continue }
            objects.append(Object(kind: .sequence, name: sequence, definition: "next \(text[0]); minimum \(text[1]); maximum \(text[2]); start \(text[3]); increment \(text[4]); cache \(text[5]); cycle \(text[6] == "1" ? "yes" : "no")"))
        }

        objects += accountObjects(globals)
        return SchemaFingerprint(engine: .mariadb, objects: objects)
    }

    /// An event's status as the fingerprint's definition begins: a copy under another name expects
    /// `eventStatus("DISABLED")` in place of `eventStatus("ENABLED")`.
    static func eventStatus(_ status: String) -> String { "status \(status)" }

    static func digest(_ text: String) throws -> String { "sha256:" + (try SHA256.hash(Array(text.utf8))).hex }

    /// The accounts, grants and role grants of `globals` as fingerprint objects (without any
    /// password hash; wildcard grants are about other databases too and are left out).
    static func accountObjects(_ globals: MariaDBGlobals) -> [Object] {
        var objects: [Object] = []
        for details in globals.accounts {
            objects.append(accountObject(details))
        }
        for grant in globals.grants {
            var what = grant.level.rawValue
            if let object = grant.object { what += " " + object }
            if let column = grant.column { what += "." + column }
            objects.append(Object(kind: .grant, name: "\(what) to \(grant.grantee.display)",
                                  definition: grant.privileges.joined(separator: ", ") + (grant.grantOption ? " with grant option" : "")))
        }
        for grant in globals.roleGrants {
            objects.append(Object(kind: .grant, name: "role \(grant.role) to \(grant.grantee.display)",
                                  definition: grant.adminOption ? "granted with admin option" : "granted"))
        }
        return objects
    }

    static func accountObject(_ details: MariaDBGlobals.AccountDetails) -> Object {
        if details.account.isRole {
            return Object(kind: .role, name: details.account.user, definition: "role; default role \(details.defaultRole ?? "none")")
        }
        let require: String
        switch details.sslType {
        case 0: require = "none"
        case 1: require = "ssl"
        case 2: require = "x509"
        default: require = "issuer \(details.x509Issuer) subject \(details.x509Subject) cipher \(details.sslCipher)"
        }
        let lifetime = details.passwordLifetime.map { $0 == 0 ? "never" : "\($0) days" } ?? "default"
        let definition = "authentication \(details.authentications.map(\.plugin).joined(separator: " or ")); require \(require)"
            + "; limits \(details.maxQuestions)/\(details.maxUpdates)/\(details.maxConnections)/\(details.maxUserConnections)/\(details.maxStatementTime)"
            + "; locked \(details.accountLocked ? "yes" : "no"); password expired \(details.passwordExpired ? "yes" : "no"); password lifetime \(lifetime)"
            + "; default role \(details.defaultRole ?? "none")"
        return Object(kind: .user, name: details.account.display, definition: definition)
    }
}
