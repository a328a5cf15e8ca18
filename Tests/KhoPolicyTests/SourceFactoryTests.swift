import Foundation
import KhoCore
import KhoSupport
import KhoPolicy
import KhoSources
import KhoTestSupport
import Testing

// `kho backup --postgres URL` and a policy's postgres source describe the same source: both become
// a SourceSpec, and `make()` (or `loader(replace:)`) is the one place a working source is built.

extension KhoPolicyUnitTests {
@Suite("sources from flags and from policies")
struct SourceFactoryTests {
    private func policySources(_ sources: String) throws -> [SourceSpec] {
        let folder = try TemporaryFolder("source-factory")
        let passwordFile = try folder.write("repository.pass", "not a real password\n")
        let file = try folder.write("p.yaml", """
            name: same-source
            agency: Sở Tư pháp
            system: Hộ tịch
            security-level: 3
            schedule: "30 1 * * *"
            repository:
              path: /srv/kho/repository
              password-file: \(passwordFile)
            sources:
            \(sources)
            objectives:
              rpo: 24h
              rto: 4h

            """)
        let (policy, errors) = PolicyLoader().load(file: file)
        #expect(errors.isEmpty, "\(errors)")
        return try #require(policy).sources
    }

    @Test("--postgres URL with two databases builds the policy's source: same endpoint, databases, globals and limits")
    func postgresFlagsMatchPolicy() throws {
        let fromPolicy = try policySources("""
              - name: ho-tich
                kind: postgres
                host: 10.0.0.5
                port: 5433
                user: backup
                databases: [ho_tich, khai_sinh]
                password-env: HO_TICH_PG_PASSWORD
                globals: false
                timeout: 2h
                min-size-ratio: 0.7
            """)[0]
        var fromFlags = try SourceSpec.database(url: "postgres://backup@10.0.0.5:5433/ho_tich,khai_sinh", name: "ho-tich",
                                                passwordFile: nil, passwordEnv: "HO_TICH_PG_PASSWORD", databaseList: true)
        fromFlags.globals = false
        fromFlags.limits.timeout = 7200
        fromFlags.limits.minSizeRatio = 0.7
        #expect(fromFlags.kind == fromPolicy.kind)
        #expect(fromFlags.endpoint == fromPolicy.endpoint)
        #expect(fromFlags.databases == fromPolicy.databases)
        #expect(fromFlags.globals == fromPolicy.globals)
        #expect(fromFlags.limits.timeout == fromPolicy.limits.timeout && fromFlags.limits.minSizeRatio == fromPolicy.limits.minSizeRatio)
        #expect(fromFlags.summary == fromPolicy.summary)
    }

    @Test("--postgres-base URL (no database) builds the policy's postgres-base source")
    func postgresBaseFlagsMatchPolicy() throws {
        let fromPolicy = try policySources("""
              - name: ho-tich
                kind: postgres-base
                host: 10.0.0.5
                port: 5433
                user: replicator
                password-env: HO_TICH_PG_PASSWORD
                checkpoint: fast
            """)[0]
        var fromFlags = try SourceSpec.postgresBase(url: "postgres://replicator@10.0.0.5:5433", name: "ho-tich",
                                                    passwordFile: nil, passwordEnv: "HO_TICH_PG_PASSWORD")
        fromFlags.checkpoint = .fast
        #expect(fromFlags.kind == .postgresBase && fromPolicy.kind == .postgresBase)
        #expect(fromFlags.endpoint == fromPolicy.endpoint && fromFlags.endpoint?.database == "postgres")
        #expect(fromFlags.checkpoint == fromPolicy.checkpoint)
        #expect(fromFlags.summary == fromPolicy.summary && fromFlags.summary == "postgres-base replicator@10.0.0.5:5433")
        let base = try #require(fromFlags.make() as? PostgresBaseBackup)
        #expect(base.checkpoint == .fast)
        #expect(throws: KhoError.self) { _ = try SourceSpec.postgresBase(url: "mariadb://root@db/x", name: "x", passwordFile: nil, passwordEnv: nil) }
    }

    @Test("--mariadb URL without user or port takes the engine's defaults, as a policy does")
    func mariadbDefaults() throws {
        let fromPolicy = try policySources("""
              - name: cong-van
                kind: mariadb
                databases: [cong_van]
                password-env: CONG_VAN_PASSWORD
            """)[0]
        let fromFlags = try SourceSpec.database(url: "mariadb://127.0.0.1/cong_van", name: "cong-van", passwordFile: nil,
                                                passwordEnv: "CONG_VAN_PASSWORD", databaseList: true)
        #expect(fromFlags.kind == .mariadb && fromFlags.endpoint == fromPolicy.endpoint && fromFlags.databases == fromPolicy.databases)
    }

    @Test("restore's loader: the URL's one database (a comma is part of its name), its engine; files sources have none")
    func loader() throws {
        let spec = try SourceSpec.database(url: "postgresql://postgres@db.local/tax,2026", name: "tax", passwordFile: "/etc/kho/pg.pass",
                                           passwordEnv: nil)
        let target = try spec.restoreTarget()
        #expect(spec.kind == .postgres && spec.name == "tax")
        #expect(target.database == "tax,2026" && target.host == "db.local" && target.passwordFile == "/etc/kho/pg.pass")
        let error = #expect(throws: KhoError.self) { try SourceSpec.sqlite(path: "/var/lib/app.db", name: "app").restoreTarget() }
        #expect(error?.kind == .usage)
        #expect(throws: KhoError.self) { try SourceSpec.database(url: "oracle://scott@db/orcl", name: "x", passwordFile: nil, passwordEnv: nil) }
    }
}
}
