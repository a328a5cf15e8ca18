import Foundation
import KhoCore
import KhoSupport

/// A PostgreSQL database's schema fingerprint, read from the catalogs: at backup in the dump's
/// snapshot, after a restore from the restored database, by the same queries.
///
/// Each object's definition is a JSON object (sorted keys, every value text or a list of texts), so
/// that role and tablespace names in it can be mapped for a restore under other names. Names are
/// quoted as the server quotes identifiers (`public."Đơn vị"`), never depend on OIDs or on the
/// database's name, and everything is read in a defined order under fixed output settings
/// (search_path empty, so every name the server prints is schema-qualified; ISO dates; UTC).
///
/// Left out: system schemas, objects that belong to an extension (they come with `CREATE
/// EXTENSION`), invalid indexes (pg_dump leaves them out too).
enum PostgresFingerprint {
    /// Definition keys whose values are role names.
    static let roleKeys: Set<String> = ["owner", "grantee", "grantors", "roles", "role", "for", "memberOf", "adminOf"]

    /// Fixes every setting that changes how the server prints what the fingerprint records.
    /// `local`: only for the connection's current transaction (the dump's snapshot at backup).
    static func prepare(_ connection: PostgresConnection, local: Bool) throws {
        try connection.query("""
            SELECT set_config('search_path', '', $1), set_config('DateStyle', 'ISO, YMD', $1), set_config('IntervalStyle', 'postgres', $1),
                   set_config('TimeZone', 'UTC', $1), set_config('extra_float_digits', '3', $1), set_config('bytea_output', 'hex', $1)
            """, [local ? "true" : "false"])
    }

    /// Reads the fingerprint and the globals of the connected database. `sequenceValues` are the
    /// values the dump set its sequences to (`PostgresSequenceScanner`), keyed by qualified name;
    /// a sequence without one is read from the server. `roles` are read too besides those the
    /// database names (after a restore: the recorded ones, so that a role is compared as a role
    /// even where a lost grant no longer names it).
    static func read(_ connection: PostgresConnection, local: Bool, sequenceValues: [String: PostgresSequenceScanner.Value]? = nil,
                     roles: Set<String> = []) throws
        -> (fingerprint: SchemaFingerprint, globals: PostgresGlobals) {
        try prepare(connection, local: local)
        let version = Int(try connection.value("SELECT current_setting('server_version_num')") ?? "") ?? 0
        var objects: [SchemaFingerprint.Object] = []
        for sql in queries(version: version) {
            for row in try connection.query(sql) {
                guard row.count == 3, let kindText = row[0], let kind = SchemaObjectKind(rawValue: kindText), let name = row[1], let json = row[2] else {
                    throw KhoError(.source, "Source \(connection.source): PostgreSQL returned a schema object kho cannot read: report this as a bug.")
                }
                var definition = try decode(json, connection)
                if kind == .sequence {
                    if let value = sequenceValues?[name] {
                        definition["lastValue"] = .string(value.lastValue)
                        definition["isCalled"] = .string(value.isCalled ? "true" : "false")
                    } else if let current = try connection.query("SELECT last_value::text, is_called::text FROM \(name)").first, current.count == 2 {
                        // The name is the server's quote_ident of schema and sequence.
                        definition["lastValue"] = .string(current[0] ?? "")
                        definition["isCalled"] = .string(current[1] ?? "")
                    }
                }
                objects.append(try object(kind, name: kind == .grant ? grantName(definition) : name, definition))
            }
        }
        var referenced = roles
        for object in objects {
            for (key, value) in try decode(object.definition, connection) where roleKeys.contains(key) {
                switch value {
                case .string(let role): referenced.insert(role)
                case .array(let list): for case .string(let role) in list { referenced.insert(role) }
                default: break
                }
            }
        }
        referenced.remove("PUBLIC")
        let globals = try PostgresGlobals.read(connection, referenced: referenced)
        objects += try globalObjects(globals)
        return (SchemaFingerprint(engine: .postgres, objects: objects), globals)
    }

    /// The database's properties and its roles as fingerprint objects.
    static func globalObjects(_ globals: PostgresGlobals) throws -> [SchemaFingerprint.Object] {
        var objects: [SchemaFingerprint.Object] = []
        let database = globals.database
        var properties: [(String, JSONValue?)] = [
            ("owner", .string(database.owner)), ("encoding", .string(database.encoding)), ("lc-collate", .string(database.collate)),
            ("lc-ctype", .string(database.ctype)), ("connection-limit", .string(String(database.connectionLimit))),
            ("tablespace", .string(database.tablespace)), ("is-template", .string(String(database.isTemplate))),
            ("comment", database.comment.map { .string($0) }), ("settings", .array(database.settings.map { .string($0) })),
        ]
        if let provider = database.localeProvider { properties.append(("locale-provider", .string(provider))) }
        if let locale = database.locale { properties.append(("locale", .string(locale))) }
        if let rules = database.icuRules { properties.append(("icu-rules", .string(rules))) }
        for (name, value) in properties {
            var definition: [String: JSONValue] = [:]
            if let value { definition[name == "owner" ? "owner" : "value"] = value }
            objects.append(try object(.databaseProperty, name: name, definition))
        }
        for setting in database.roleSettings {
            let definition: [String: JSONValue] = ["role": .string(setting.role), "value": .array(setting.settings.map { .string($0) })]
            objects.append(try object(.databaseProperty, name: roleSettingsName(definition), definition))
        }
        for role in globals.roles {
            var definition: [String: JSONValue] = [
                "role": .string(role.name),
                "attributes": .string(roleAttributes(role)),
                "connectionLimit": .string(String(role.connectionLimit)),
                "settings": .array(role.settings.map { .string($0) }),
                "memberOf": .array(role.memberOf.map(\.group).uniqued().map { .string($0) }),
                "adminOf": .array(role.memberOf.filter(\.admin).map(\.group).uniqued().map { .string($0) }),
            ]
            if let validUntil = role.validUntil { definition["validUntil"] = .string(validUntil) }
            objects.append(try object(.role, name: role.name, definition))
        }
        return objects
    }

    static func roleAttributes(_ role: PostgresGlobals.Role) -> String {
        [role.superuser ? "SUPERUSER" : "NOSUPERUSER", role.inherit ? "INHERIT" : "NOINHERIT", role.createRole ? "CREATEROLE" : "NOCREATEROLE",
         role.createDatabase ? "CREATEDB" : "NOCREATEDB", role.login ? "LOGIN" : "NOLOGIN", role.replication ? "REPLICATION" : "NOREPLICATION",
         role.bypassRowSecurity ? "BYPASSRLS" : "NOBYPASSRLS"].joined(separator: " ")
    }

    /// "on table public.t to reporting", "default privileges for app_owner in schema public on tables to reporting".
    static func grantName(_ definition: [String: JSONValue]) -> String {
        let grantee = definition["grantee"]?.text ?? ""
        if let role = definition["for"]?.text {
            let schema = definition["schema"]?.text.map { " in schema \($0)" } ?? ""
            return "default privileges for \(role)\(schema) on \(definition["objects"]?.text ?? "") to \(grantee)"
        }
        return "on \(definition["on"]?.text ?? "") to \(grantee)"
    }

    static func roleSettingsName(_ definition: [String: JSONValue]) -> String {
        "settings for role \(definition["role"]?.text ?? "")"
    }

    static func object(_ kind: SchemaObjectKind, name: String, _ definition: [String: JSONValue]) throws -> SchemaFingerprint.Object {
        SchemaFingerprint.Object(kind: kind, name: name, definition: String(decoding: try JSON.encoder.encode(definition), as: UTF8.self))
    }

    static func decode(_ json: String, _ connection: PostgresConnection? = nil) throws -> [String: JSONValue] {
        do {
            return try JSON.decoder.decode([String: JSONValue].self, from: Data(json.utf8))
        } catch {
            throw KhoError(.integrity, "A schema object's definition is not a JSON object (\(error)): report this as a bug.")
        }
    }

    // MARK: the queries

    /// Each query returns (kind, name, definition as a JSON object of texts).
    static func queries(version: Int) -> [String] {
        let userSchema = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"
        func notExtension(_ catalog: String, _ oid: String) -> String {
            "NOT EXISTS (SELECT 1 FROM pg_depend xd WHERE xd.classid = '\(catalog)'::regclass AND xd.objid = \(oid) AND xd.deptype = 'e')"
        }
        let relation = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        let userRelation = "\(userSchema) AND \(notExtension("pg_class", "c.oid"))"
        let tablespace = "(SELECT ts.spcname FROM pg_tablespace ts WHERE ts.oid = c.reltablespace)"
        let accessMethod = version >= 120000 ? "(SELECT am.amname FROM pg_am am WHERE am.oid = c.relam)" : "NULL"
        return [
            // schemas
            """
            SELECT 'schema', quote_ident(n.nspname), jsonb_strip_nulls(jsonb_build_object(
                'owner', pg_get_userbyid(n.nspowner), 'comment', obj_description(n.oid, 'pg_namespace')))::text
            FROM pg_namespace n WHERE \(userSchema) AND \(notExtension("pg_namespace", "n.oid"))
            ORDER BY 2
            """,
            // tables, partitioned tables, foreign tables
            """
            SELECT 'table', \(relation), jsonb_strip_nulls(jsonb_build_object(
                'kind', CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' ELSE 'foreign table' END,
                'owner', pg_get_userbyid(c.relowner),
                'persistence', CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary' ELSE 'permanent' END,
                'partitionKey', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                'partitionOf', (SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) FROM pg_inherits i
                                JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                                WHERE i.inhrelid = c.oid AND c.relispartition),
                'partitionBound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
                'inherits', (SELECT string_agg(quote_ident(pn.nspname) || '.' || quote_ident(pc.relname), ', ' ORDER BY i.inhseqno)
                             FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                             WHERE i.inhrelid = c.oid AND NOT c.relispartition),
                'options', array_to_string(c.reloptions, ', '),
                'rowSecurity', c.relrowsecurity::text, 'forceRowSecurity', c.relforcerowsecurity::text,
                'replicaIdentity', c.relreplident::text, 'tablespace', \(tablespace), 'accessMethod', \(accessMethod),
                'ofType', CASE WHEN c.reloftype <> 0 THEN format_type(c.reloftype, NULL) END,
                'server', (SELECT quote_ident(s.srvname) FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = c.oid),
                'serverOptions', (SELECT array_to_string(ft.ftoptions, ', ') FROM pg_foreign_table ft WHERE ft.ftrelid = c.oid),
                'comment', obj_description(c.oid, 'pg_class')))::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'f') AND \(userRelation)
            ORDER BY 2
            """,
            // columns of tables
            """
            SELECT 'column', \(relation) || '.' || quote_ident(a.attname), jsonb_strip_nulls(jsonb_build_object(
                'position', (row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum))::text,
                'type', format_type(a.atttypid, a.atttypmod), 'notNull', a.attnotnull::text,
                'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                'identity', CASE a.attidentity WHEN 'a' THEN 'ALWAYS' WHEN 'd' THEN 'BY DEFAULT' END,
                'collation', CASE WHEN a.attcollation <> t.typcollation THEN
                    (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) FROM pg_collation co
                     JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
                'options', array_to_string(a.attoptions, ', '),
                'foreignOptions', array_to_string(a.attfdwoptions, ', '),
                'comment', col_description(a.attrelid, a.attnum)))::text
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relkind IN ('r', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped AND \(userRelation)
            ORDER BY 2
            """,
            // indexes
            """
            SELECT 'index', quote_ident(n.nspname) || '.' || quote_ident(ic.relname), jsonb_strip_nulls(jsonb_build_object(
                'definition', pg_get_indexdef(i.indexrelid), 'clustered', i.indisclustered::text, 'replicaIdentity', i.indisreplident::text,
                'tablespace', (SELECT ts.spcname FROM pg_tablespace ts WHERE ts.oid = ic.reltablespace),
                'options', array_to_string(ic.reloptions, ', '),
                'comment', obj_description(ic.oid, 'pg_class')))::text
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE (i.indisvalid OR ic.relkind = 'I') AND i.indisready AND c.relkind IN ('r', 'p', 'm', 'f') AND \(userRelation)
            ORDER BY 2
            """,
            // constraints of tables
            """
            SELECT 'constraint', \(relation) || '.' || quote_ident(co.conname), jsonb_strip_nulls(jsonb_build_object(
                'type', co.contype::text, 'definition', pg_get_constraintdef(co.oid), 'validated', co.convalidated::text,
                'comment', obj_description(co.oid, 'pg_constraint')))::text
            FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE \(userRelation)
            ORDER BY 2
            """,
            // views and materialized views
            """
            SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized-view' END, \(relation), jsonb_strip_nulls(jsonb_build_object(
                'definition', pg_get_viewdef(c.oid), 'owner', pg_get_userbyid(c.relowner), 'options', array_to_string(c.reloptions, ', '),
                'populated', CASE WHEN c.relkind = 'm' THEN c.relispopulated::text END,
                'tablespace', \(tablespace), 'comment', obj_description(c.oid, 'pg_class')))::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('v', 'm') AND \(userRelation)
            ORDER BY 2
            """,
            // functions, procedures, aggregates
            """
            SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
                   quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                   jsonb_strip_nulls(jsonb_build_object(
                'definition', CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
                'aggregate', (SELECT concat_ws(' ', 'transition', ag.aggtransfn::regproc::text, 'state', format_type(ag.aggtranstype, NULL),
                                               'final', NULLIF(ag.aggfinalfn, 0)::regproc::text, 'combine', NULLIF(ag.aggcombinefn, 0)::regproc::text,
                                               'initial', ag.agginitval, 'sort', NULLIF(ag.aggsortop, 0)::regoperator::text, 'kind', ag.aggkind::text)
                              FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid),
                'owner', pg_get_userbyid(p.proowner), 'securityDefiner', p.prosecdef::text,
                'comment', obj_description(p.oid, 'pg_proc')))::text
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE \(userSchema) AND \(notExtension("pg_proc", "p.oid"))
            ORDER BY 2
            """,
            // triggers
            """
            SELECT 'trigger', \(relation) || '.' || quote_ident(t.tgname), jsonb_strip_nulls(jsonb_build_object(
                'definition', pg_get_triggerdef(t.oid), 'enabled', t.tgenabled::text, 'comment', obj_description(t.oid, 'pg_trigger')))::text
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT t.tgisinternal AND \(userRelation)
            ORDER BY 2
            """,
            // event triggers
            """
            SELECT 'event-trigger', quote_ident(e.evtname), jsonb_strip_nulls(jsonb_build_object(
                'event', e.evtevent::text, 'owner', pg_get_userbyid(e.evtowner), 'function', e.evtfoid::regproc::text,
                'enabled', e.evtenabled::text, 'tags', array_to_string(e.evttags, ', '),
                'comment', obj_description(e.oid, 'pg_event_trigger')))::text
            FROM pg_event_trigger e WHERE \(notExtension("pg_event_trigger", "e.oid"))
            ORDER BY 2
            """,
            // sequences (their values are added by the caller)
            """
            SELECT 'sequence', \(relation), jsonb_strip_nulls(jsonb_build_object(
                'type', format_type(s.seqtypid, NULL), 'start', s.seqstart::text, 'increment', s.seqincrement::text,
                'minimum', s.seqmin::text, 'maximum', s.seqmax::text, 'cycle', s.seqcycle::text, 'cache', s.seqcache::text,
                'ownedBy', (SELECT quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) || '.' || quote_ident(a.attname)
                            FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                            JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                              AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 ORDER BY 1 LIMIT 1),
                'owner', pg_get_userbyid(c.relowner),
                'persistence', CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary' ELSE 'permanent' END,
                'comment', obj_description(c.oid, 'pg_class')))::text
            FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE \(userRelation)
            ORDER BY 2
            """,
            // types: enums, composites, ranges, base types
            """
            SELECT 'type', quote_ident(n.nspname) || '.' || quote_ident(t.typname), jsonb_strip_nulls(jsonb_build_object(
                'kind', CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'c' THEN 'composite' WHEN 'r' THEN 'range' ELSE 'base' END,
                'labels', CASE WHEN t.typtype = 'e' THEN
                    (SELECT string_agg(quote_literal(en.enumlabel), ', ' ORDER BY en.enumsortorder) FROM pg_enum en WHERE en.enumtypid = t.oid) END,
                'attributes', CASE WHEN t.typtype = 'c' THEN
                    (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod)
                                       || CASE WHEN a.attcollation <> at.typcollation THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                                       ', ' ORDER BY a.attnum)
                     FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
                     WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
                'range', CASE WHEN t.typtype = 'r' THEN
                    (SELECT concat_ws(' ', 'subtype', format_type(r.rngsubtype, NULL), 'collation', NULLIF(r.rngcollation, 0)::regcollation::text,
                                      'opclass', (SELECT quote_ident(oc.opcname) FROM pg_opclass oc WHERE oc.oid = r.rngsubopc),
                                      'canonical', NULLIF(r.rngcanonical, 0)::regproc::text, 'subdiff', NULLIF(r.rngsubdiff, 0)::regproc::text)
                     FROM pg_range r WHERE r.rngtypid = t.oid) END,
                'owner', pg_get_userbyid(t.typowner), 'comment', obj_description(t.oid, 'pg_type')))::text
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.typtype IN ('e', 'c', 'r', 'b') AND \(userSchema) AND \(notExtension("pg_type", "t.oid"))
              AND (t.typrelid = 0 OR (SELECT rc.relkind FROM pg_class rc WHERE rc.oid = t.typrelid) = 'c')
              AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
            ORDER BY 2
            """,
            // domains
            """
            SELECT 'domain', quote_ident(n.nspname) || '.' || quote_ident(t.typname), jsonb_strip_nulls(jsonb_build_object(
                'type', format_type(t.typbasetype, t.typtypmod), 'notNull', t.typnotnull::text, 'default', t.typdefault,
                'collation', CASE WHEN t.typcollation <> bt.typcollation THEN t.typcollation::regcollation::text END,
                'constraints', (SELECT string_agg(quote_ident(co.conname) || ' ' || pg_get_constraintdef(co.oid), '; ' ORDER BY co.conname)
                                FROM pg_constraint co WHERE co.contypid = t.oid),
                'owner', pg_get_userbyid(t.typowner), 'comment', obj_description(t.oid, 'pg_type')))::text
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_type bt ON bt.oid = t.typbasetype
            WHERE t.typtype = 'd' AND \(userSchema) AND \(notExtension("pg_type", "t.oid"))
            ORDER BY 2
            """,
            // extensions
            """
            SELECT 'extension', quote_ident(x.extname), jsonb_strip_nulls(jsonb_build_object(
                'version', x.extversion, 'schema', (SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE n.oid = x.extnamespace),
                'comment', obj_description(x.oid, 'pg_extension')))::text
            FROM pg_extension x
            ORDER BY 2
            """,
            // row-level security policies
            """
            SELECT 'policy', \(relation) || '.' || quote_ident(p.polname), jsonb_strip_nulls(jsonb_build_object(
                'command', p.polcmd::text, 'permissive', p.polpermissive::text,
                'roles', to_jsonb(ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1)),
                'using', pg_get_expr(p.polqual, p.polrelid), 'withCheck', pg_get_expr(p.polwithcheck, p.polrelid),
                'comment', obj_description(p.oid, 'pg_policy')))::text
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE \(userRelation)
            ORDER BY 2
            """,
            // rules (not the _RETURN rule of a view)
            """
            SELECT 'rule', \(relation) || '.' || quote_ident(r.rulename), jsonb_strip_nulls(jsonb_build_object(
                'definition', pg_get_ruledef(r.oid), 'enabled', r.ev_enabled::text, 'comment', obj_description(r.oid, 'pg_rewrite')))::text
            FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE r.rulename <> '_RETURN' AND \(userRelation)
            ORDER BY 2
            """,
            // privileges: per object and grantee, the ACL as the server applies it (a NULL ACL is
            // the object kind's default, so an explicit default ACL and none compare equal)
            """
            WITH acl(object, acl, owner, kind) AS (
                SELECT 'database', d.datacl, d.datdba, 'd' FROM pg_database d WHERE d.datname = current_database()
                UNION ALL
                SELECT 'schema ' || quote_ident(n.nspname), n.nspacl, n.nspowner, 'n'
                FROM pg_namespace n WHERE \(userSchema) AND \(notExtension("pg_namespace", "n.oid"))
                UNION ALL
                SELECT CASE WHEN c.relkind = 'S' THEN 'sequence ' ELSE 'table ' END || \(relation), c.relacl, c.relowner,
                       CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND \(userRelation)
                UNION ALL
                SELECT 'column ' || \(relation) || '.' || quote_ident(a.attname), a.attacl, c.relowner, NULL
                FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped AND \(userRelation)
                UNION ALL
                SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' ELSE 'function ' END
                       || quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                       p.proacl, p.proowner, 'f'
                FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE \(userSchema) AND \(notExtension("pg_proc", "p.oid"))
                UNION ALL
                SELECT CASE t.typtype WHEN 'd' THEN 'domain ' ELSE 'type ' END || quote_ident(n.nspname) || '.' || quote_ident(t.typname),
                       t.typacl, t.typowner, 'T'
                FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE t.typtype IN ('e', 'c', 'r', 'b', 'd') AND \(userSchema) AND \(notExtension("pg_type", "t.oid"))
                  AND (t.typrelid = 0 OR (SELECT rc.relkind FROM pg_class rc WHERE rc.oid = t.typrelid) = 'c')
                  AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
            ), items AS (
                SELECT acl.object, x.grantee, x.grantor, x.privilege_type, x.is_grantable
                FROM acl, aclexplode(CASE WHEN acl.kind IS NULL THEN acl.acl ELSE coalesce(acl.acl, acldefault(acl.kind::"char", acl.owner)) END) x
            )
            SELECT 'grant', '', jsonb_build_object(
                'on', object, 'grantee', CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(grantee) END,
                'privileges', string_agg(privilege_type || CASE WHEN is_grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', '
                                         ORDER BY privilege_type, is_grantable),
                'grantors', to_jsonb(array_agg(DISTINCT pg_get_userbyid(grantor) ORDER BY pg_get_userbyid(grantor))))::text
            FROM items GROUP BY object, grantee
            ORDER BY 3
            """,
            // default privileges (ALTER DEFAULT PRIVILEGES)
            """
            SELECT 'grant', '', jsonb_strip_nulls(jsonb_build_object(
                'for', pg_get_userbyid(d.defaclrole),
                'schema', (SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE n.oid = d.defaclnamespace),
                'objects', CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                                                WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END,
                'grantee', CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                'privileges', string_agg(x.privilege_type || CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END, ', '
                                         ORDER BY x.privilege_type, x.is_grantable)))::text
            FROM pg_default_acl d, aclexplode(d.defaclacl) x
            GROUP BY d.defaclrole, d.defaclnamespace, d.defaclobjtype, x.grantee
            ORDER BY 3
            """,
        ]
    }
}

extension JSONValue {
    /// The text of a string value.
    var text: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

extension Array where Element: Hashable {
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
