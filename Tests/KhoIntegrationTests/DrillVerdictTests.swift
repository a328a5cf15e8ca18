import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// The verdict of a drill decides `kho verify`'s exit code, not the text of its checks: a check the
// policy's `drills: checks:` leaves out is recorded, shown as not counted, and changes nothing.

@Suite("drill verdicts", .serialized, .scratchPostgres)
struct DrillVerdictTests {
    @Test("a manifest difference in a drill whose policy does not count the manifest: the drill passes and kho verify exits 0 (it exited 12)")
    func uncountedManifest() throws {
        let pg = try ScratchPostgres.requireShared()
        let bench = try DrillBench("drill-verdict")
        let database = "drill_uncounted"
        _ = try pg.psql("DROP DATABASE IF EXISTS \(database);")
        try pg.createDatabase(database)
        _ = try pg.psql("""
            CREATE TABLE orders (id int PRIMARY KEY, total numeric(12,2) NOT NULL);
            INSERT INTO orders SELECT i, (i * 1.25)::numeric(12,2) FROM generate_series(1, 200) i;
            """, database: database)
        // pg_dump as a dump tool that silently changes one value: the manifest (taken from the
        // server) and the dump disagree, which only the manifest comparison can see.
        let wrappers = bench.box.path("bin")
        try makeDirectories(wrappers)
        try writeFile(wrappers + "/pg_dump", Array(#"""
            #!/bin/sh
            "\#(pg.program("pg_dump"))" "$@" | awk '
                /^COPY public\.orders / { copying = 1; print; next }
                copying && /^\\\.$/ { copying = 0 }
                copying && ++rows == 7 { sub(/\t[^\t]*$/, "\t999999.99") }
                { print }'
            exit 0

            """#.utf8), mode: 0o755)
        func writePolicy(checks: String) throws {
            try bench.writePolicy("lenient", """
                sources:
                  - name: orders-db
                    kind: postgres
                    port: \(pg.port)
                    databases: [\(database)]
                    globals: false
                objectives:
                  rpo: 24h
                  rto: 1h
                drills:
                  every: 7d
                  checks: [\(checks)]

                """)
        }
        try writePolicy(checks: "integrity, rto")
        let path = wrappers + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let backed = try bench.run(["run", "--all", "--json"], env: ["PATH": path])
        try #require(backed.exitCode == 0, "\(backed)")

        let (result, drills) = try bench.verify(["--policy", "lenient", "--source", "orders-db"])
        let drill = try #require(drills.first, "\(result)")
        #expect(drill.check("manifest")?.outcome == "fail", "the difference is found and recorded: \(drill)")
        #expect(drill.passed, "\(drill)")
        #expect(drill.failureReasons == ["table public.orders: checksum differs (not counted: the policy's drills do not require the manifest check)"],
                "\(drill)")
        #expect(result.exitCode == 0, "a drill that passed exits 0: \(result)")

        // The same drill with the manifest counted fails with 12.
        try writePolicy(checks: "integrity, manifest, rto")
        let (strict, strictDrills) = try bench.verify(["--policy", "lenient", "--source", "orders-db"])
        #expect(strict.exitCode == 12 && strictDrills.first?.passed == false, "\(strict)")
        try expectNothingLeft(bench, after: "drills with an uncounted and a counted manifest difference")
    }
}
