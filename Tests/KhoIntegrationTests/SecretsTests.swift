import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// Secrets kho holds must not reach the programs it starts, its messages or its catalog, and a
// private database must not be copied where others can read it (issue #17).

@Suite("secrets and private copies", .serialized)
struct SecretsTests {
    static let secrets = [
        "KHO_PASSWORD": "kho-password-VALUE-8d1f",
        "KHO_FROM_PASSWORD": "kho-from-VALUE-22ab",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-VALUE-93c7",
        "AWS_SESSION_TOKEN": "aws-token-VALUE-51e0",
        "PGPASSWORD": "pg-password-VALUE-77aa",
        "MYSQL_PWD": "mysql-pwd-VALUE-0c3d",
        "AGENCY_DB_PASSWORD": "agency-db-VALUE-4b19",
    ]

    @Test("a command source that prints its environment into the dump stores none of kho's secrets (policy run and kho backup --command)")
    func commandEnvironment() throws {
        let bench = try DrillBench("secrets-env")
        try bench.writePolicy("env", """
            sources:
              - name: environment
                kind: command
                command: "env; echo end-of-env"
            objectives:
              rpo: 24h
              rto: 1h

            """)
        var env: [String: String?] = [:]
        for (key, value) in SecretsTests.secrets { env[key] = value }
        try bench.ok(["run", "--all"], env: env)
        let dump = try bench.ok(["dump", "latest", "environment"]).out
        #expect(dump.contains("end-of-env") && dump.contains("PATH="), "\(dump)")
        for (key, value) in SecretsTests.secrets {
            #expect(!dump.contains(value), "the dump command saw \(key): \(dump)")
        }

        // The same through kho backup --command (the repository password comes from a variable here).
        env["KHO_PASSWORD_FILE"] = nil
        env["KHO_PASSWORD"] = "drill repository password"
        try bench.ok(["backup", "--command", "env; echo end-of-env", "--stdin-name", "direct"], env: env)
        let direct = try bench.ok(["dump", "latest", "direct"]).out
        #expect(direct.contains("end-of-env"), "\(direct)")
        for (key, value) in SecretsTests.secrets where key != "KHO_PASSWORD" {
            #expect(!direct.contains(value), "the dump command saw \(key): \(direct)")
        }
        #expect(!direct.contains("drill repository password"), "the dump command saw the repository password: \(direct)")
    }

    @Test("a failing policy command with a secret expanded from ${VAR}: neither the message printed nor the catalog holds the value")
    func maskedCommand() throws {
        let bench = try DrillBench("secrets-mask")
        try bench.writePolicy("masked", """
            sources:
              - name: dump-api
                kind: command
                command: "echo \\"login with ${DUMP_API_SECRET} refused\\" >&2; exit 3; echo ${DUMP_API_SECRET}"
              - name: dump-other
                kind: command
                command: "false --token=${DUMP_OTHER}"
            objectives:
              rpo: 24h
              rto: 1h

            """)
        let values = ["DUMP_API_SECRET": "expanded-secret-VALUE-6f2e", "DUMP_OTHER": "other-value-VALUE-a1b2"]
        let result = try bench.run(["run", "--all"], env: values)
        #expect(result.exitCode != 0, "\(result)")
        #expect(result.all.contains("exited with status"), "\(result)")
        #expect(result.all.contains("***"), "the failure is not shown with the secret masked: \(result)")
        for (key, value) in values {
            #expect(!result.all.contains(value), "kho printed \(key): \(result)")
        }
        // The catalog (its database and any journal beside it) holds neither value.
        let errors = try ScratchSQLite.sql("SELECT coalesce(error, '') FROM runs;", path: bench.state + "/catalog.sqlite", scratch: bench.box.dir)
        #expect(errors.contains("exited with status"), "\(errors)")
        for name in try FileManager.default.contentsOfDirectory(atPath: bench.state) {
            let bytes = try readFile(bench.state + "/" + name)
            for (key, value) in values {
                #expect(bytes.firstRange(of: Array(value.utf8)) == nil, "\(name) holds \(key)")
            }
        }
        let status = try bench.run(["status", "--json"], env: values)
        for (key, value) in values { #expect(!status.all.contains(value), "kho status printed \(key)") }
    }

    @Test("the temporary copy of a 0600 SQLite database is never readable by others, and is gone afterwards")
    func privateSQLiteCopy() throws {
        guard ScratchSQLite.isAvailable else { return }
        let bench = try DrillBench("secrets-sqlite")
        let database = bench.box.path("private.sqlite")
        try ScratchSQLite.sql("""
            CREATE TABLE secrets (id INTEGER PRIMARY KEY, body TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
            INSERT INTO secrets SELECT i, hex(randomblob(100)) FROM n;
            """, path: database, scratch: bench.box.dir)
        chmod(database, 0o600)
        try bench.writePolicy("private", """
            sources:
              - name: private-db
                kind: sqlite
                path: \(database)
            objectives:
              rpo: 24h
              rto: 1h

            """)
        // Watch kho's TMPDIR for everything the backup creates in it, as often as possible.
        let done = Locked(false)
        let seen = Locked<[String: mode_t]>([:])
        let watcher = Thread {
            while !done.current {
                if let walker = FileManager.default.enumerator(atPath: bench.tmp) {
                    while let relative = walker.nextObject() as? String {
                        var st = stat()
                        if lstat(bench.tmp + "/" + relative, &st) == 0 { seen.withLock { $0[relative] = $0[relative, default: 0] | st.st_mode } }
                    }
                }
                usleep(500)
            }
        }
        watcher.start()
        let run = try bench.run(["run", "--all"])
        done.withLock { $0 = true }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(run.exitCode == 0, "\(run)")
        let entries = seen.current
        #expect(!entries.isEmpty, "the backup's temporary copy was never seen in \(bench.tmp)")
        for (path, mode) in entries {
            #expect(mode & 0o077 == 0, "\(path) had mode \(String(mode & 0o7777, radix: 8)) while the backup ran")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: bench.tmp)
        #expect(left.isEmpty, "left in TMPDIR: \(left)")
    }
}
