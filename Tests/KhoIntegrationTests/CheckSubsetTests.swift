import Foundation
import KhoTestSupport
import Glibc
import Testing

@Suite("check --read-data-subset")
struct CheckSubsetTests {
    struct Report: Decodable {
        var errors: [String]
        var packs: Int
        var packsRead: Int
        var blobsRead: Int
    }

    @Test("parts 1/3, 2/3, 3/3 read every pack once; 50% reads half; --read-data reads all")
    func subsets() throws {
        let sandbox = try Sandbox("subset")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "65536")
        let source = sandbox.path("src")
        try makeDirectories(source)
        for i in 0..<5 { try writeFile(source + "/file-\(i)", randomBytes(2 << 20 + i)) }
        try sandbox.ok("backup", source)
        let packs = try sandbox.repositoryFiles("data").count
        try #require(packs >= 9, "the backup should have written ten or so 1 MiB packs, found \(packs)")

        func run(_ arguments: String...) throws -> Report {
            let result = try sandbox.kho(["check"] + arguments + ["--json"])
            #expect(result.exitCode == 0, "\(result)")
            return try result.decode(Report.self)
        }

        let all = try run("--read-data")
        #expect(all.packs == packs)
        #expect(all.packsRead == packs)

        var read = 0
        var blobs = 0
        for part in 1...3 {
            let report = try run("--read-data-subset", "\(part)/3")
            #expect(report.packs == packs)
            #expect(report.errors.isEmpty)
            read += report.packsRead
            blobs += report.blobsRead
        }
        #expect(read == packs, "the three parts read \(read) packs of \(packs)")
        #expect(blobs == all.blobsRead, "the three parts read \(blobs) blobs, --read-data \(all.blobsRead)")

        let half = try run("--read-data-subset", "50%")
        #expect(half.packsRead == (packs + 1) / 2, "50% of \(packs) packs read \(half.packsRead)")
        let whole = try run("--read-data-subset", "1/1")
        #expect(whole.packsRead == packs)

        for bad in ["0%", "101%", "4/3", "0/3", "x"] {
            let result = try sandbox.kho("check", "--read-data-subset", bad)
            #expect(result.exitCode == 2, "--read-data-subset \(bad) is a usage error: \(result)")
        }
    }
}
