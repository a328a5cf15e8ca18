import Foundation
import Glibc
import Testing
@testable import KhoCore
import KhoSupport
import KhoTestSupport

/// Serving a WAL archive to restore_command from the restore process (served mode), without a
/// server: segments made from the first page a real PostgreSQL 15 wrote, padded to their size.
@Suite struct WALFetchServerTests {
    static let sysid = SystemIdentifier(0x6b16_d156_c0f2_5a77)
    static let identity = WALClusterIdentity(cluster: sysid, serverVersion: 15)

    /// Three consecutive 1 MiB segments: the first page a real cluster wrote for FF2, with the page
    /// address each later segment has (what PostgreSQL writes there), padded to the segment size.
    static func segments() throws -> [(name: WALFileName, file: [UInt8])] {
        let fixture = try #require(try WALSegmentHeaderTests.fixtures().first { $0.name.description == "000000030000000700000FF2" })
        let size = fixture.segmentSize
        let first = fixture.name.segmentNumber(segmentSize: size)
        return (first..<(first + 3)).map { number in
            let name = WALFileName.segment(timeline: 3, number: number, segmentSize: size)
            var file = fixture.page + [UInt8](repeating: 0, count: size.bytes - fixture.page.count)
            withUnsafeBytes(of: name.startLSN(segmentSize: size).value.littleEndian) { file.replaceSubrange(8..<16, with: $0) }
            return (name, file)
        }
    }

    static func repository() throws -> Repository {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        return try Repository.create(storage: MemoryStorage(), password: Array("test password".utf8), options: options)
    }

    /// Serves `repository`'s archive of "ho-tich" from a socket in a new folder, for `body`.
    static func withServer(_ repository: Repository, readAhead: Int = 8, _ body: (String, WALFetchServer) throws -> Void) throws {
        let record = try #require(try WALArchive.currentRecord(source: "ho-tich", in: repository))
        let folder = try ServerSupport.makeTemporaryFolder("walfetch")
        defer { try? removeTree(folder) }
        let server = try WALFetchServer(repository: repository, record: record, socketPath: folder + "/fetch.sock",
                                        allowedUser: geteuid(), allowedGroup: getegid(), readAhead: readAhead)
        defer { server.stop() }
        try body(folder, server)
    }

    /// The server answers what the archive holds, says MISSING past its end and GAP for a hole,
    /// and the client writes the file whole under PostgreSQL's name.
    @Test func fetchServerServesMissingAndGaps() throws {
        let repository = try Self.repository()
        let archive = try WALArchive(repository: repository, source: "ho-tich")
        let segments = try Self.segments()
        for segment in segments where segment.name != segments[1].name {
            _ = try archive.push(name: segment.name, file: segment.file, identity: Self.identity)
        }
        try Self.withServer(repository, readAhead: 4) { folder, server in
            let first = WALFetchClient.fetch(socket: server.socketPath, name: segments[0].name.description, destination: folder + "/RECOVERYXLOG")
            #expect(first == .written(bytes: 1 << 20))
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/RECOVERYXLOG"))) == segments[0].file)
            let gap = WALFetchClient.fetch(socket: server.socketPath, name: segments[1].name.description, destination: folder + "/gap")
            guard case .fatal(let message) = gap else { Issue.record("a hole was not fatal: \(gap)"); return }
            #expect(message.contains("missing from the archive") && gap.exitStatus == 126)
            #expect(!FileManager.default.fileExists(atPath: folder + "/gap"))
            let last = WALFetchClient.fetch(socket: server.socketPath, name: segments[2].name.description, destination: folder + "/last")
            #expect(last == .written(bytes: 1 << 20))
            let past = WALFileName.segment(timeline: 3, number: segments[2].name.segmentNumber(segmentSize: try WALSegmentSize(bytes: 1 << 20)) + 1,
                                           segmentSize: try WALSegmentSize(bytes: 1 << 20))
            #expect(WALFetchClient.fetch(socket: server.socketPath, name: past.description, destination: folder + "/past") == .missing)
            #expect(WALFetchClient.fetch(socket: server.socketPath, name: "00000004.history", destination: folder + "/h") == .missing)
            #expect(WALFetchClient.fetch(socket: server.socketPath, name: "../../etc/passwd", destination: folder + "/x").exitStatus == 126)
            #expect(server.statistics.served == 2)
        }
    }

    /// The read-ahead starts at the base backup's first segment before anything is asked, and the
    /// last segment served is answered again without the repository (PostgreSQL asks for it
    /// again at the end of recovery): both proven by removing the stored objects first.
    @Test func readAheadFromTheStartAndTheLastSegmentAgain() throws {
        let repository = try Self.repository()
        let archive = try WALArchive(repository: repository, source: "ho-tich")
        let segments = try Self.segments()
        for segment in segments { _ = try archive.push(name: segment.name, file: segment.file, identity: Self.identity) }
        try Self.withServer(repository, readAhead: 4) { folder, server in
            server.readAhead(from: segments[0].name)
            let deadline = Date().addingTimeInterval(30)
            while server.statistics.prefetched < 3 && Date() < deadline { usleep(5_000) }
            #expect(server.statistics.prefetched == 3)
            for segment in segments { try repository.storage.remove(segment.name.handle(cluster: Self.sysid)) }
            for (n, segment) in segments.enumerated() {
                let outcome = WALFetchClient.fetch(socket: server.socketPath, name: segment.name.description, destination: folder + "/seg\(n)")
                #expect(outcome == .written(bytes: 1 << 20))
                #expect(Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/seg\(n)"))) == segment.file)
            }
            let again = WALFetchClient.fetch(socket: server.socketPath, name: segments[2].name.description, destination: folder + "/again")
            #expect(again == .written(bytes: 1 << 20))
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/again"))) == segments[2].file)
            // Only the last one: an earlier segment asked again goes to the repository (removed here).
            #expect(WALFetchClient.fetch(socket: server.socketPath, name: segments[0].name.description, destination: folder + "/early").exitStatus != 0)
            #expect(server.statistics.served == 4)
        }
    }

    /// The server writes only into a new, empty regular file the client passed with its request:
    /// a request without one, a file with content, or a pipe gets an ERROR line and nothing is
    /// written; the client leaves no temporary file behind when it gets no segment.
    @Test func theServerFillsOnlyANewEmptyFileOfTheClients() throws {
        let repository = try Self.repository()
        let segments = try Self.segments()
        _ = try WALArchive(repository: repository, source: "ho-tich").push(name: segments[0].name, file: segments[0].file, identity: Self.identity)
        try Self.withServer(repository) { folder, server in
            func ask(_ descriptor: Int32?) throws -> String {
                let socket = try UnixSocket.connect(to: server.socketPath)
                defer { socket.close() }
                try DescriptorPassing.send(socket.descriptor, Array("FETCH \(segments[0].name)\n".utf8), descriptor: descriptor, what: "a test socket")
                return try #require(try socket.readLine(limit: 4096))
            }
            #expect(try ask(nil).hasPrefix("ERROR "))
            let full = folder + "/full"
            try Data("already here".utf8).write(to: URL(fileURLWithPath: full))
            let fullFD = open(full, O_WRONLY)
            defer { close(fullFD) }
            #expect(try ask(fullFD).hasPrefix("ERROR "))
            #expect(try String(contentsOfFile: full, encoding: .utf8) == "already here")
            var pipeFDs: [Int32] = [0, 0]
            #expect(pipe(&pipeFDs) == 0)
            defer { close(pipeFDs[0]); close(pipeFDs[1]) }
            #expect(try ask(pipeFDs[1]).hasPrefix("ERROR "))
            let empty = folder + "/empty"
            let emptyFD = open(empty, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            defer { close(emptyFD) }
            #expect(try ask(emptyFD) == "WROTE \(1 << 20)")
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: empty))) == segments[0].file)

            let past = WALFileName.segment(timeline: 3, number: segments[0].name.segmentNumber(segmentSize: try WALSegmentSize(bytes: 1 << 20)) + 5,
                                           segmentSize: try WALSegmentSize(bytes: 1 << 20))
            #expect(WALFetchClient.fetch(socket: server.socketPath, name: past.description, destination: folder + "/RECOVERYXLOG") == .missing)
            #expect(!FileManager.default.fileExists(atPath: folder + "/RECOVERYXLOG.kho-tmp"))
            #expect(!FileManager.default.fileExists(atPath: folder + "/RECOVERYXLOG"))
        }
    }

    /// A damaged object stops recovery (126) instead of ending it early.
    @Test func aDamagedObjectIsFatal() throws {
        let repository = try Self.repository()
        let segments = try Self.segments()
        _ = try WALArchive(repository: repository, source: "ho-tich").push(name: segments[0].name, file: segments[0].file, identity: Self.identity)
        let handle = segments[0].name.handle(cluster: Self.sysid)
        var stored = try repository.storage.load(handle)
        stored[stored.count / 2] ^= 0xff
        try repository.storage.remove(handle)
        try repository.storage.save(handle, data: stored)
        try Self.withServer(repository) { folder, server in
            let outcome = WALFetchClient.fetch(socket: server.socketPath, name: segments[0].name.description, destination: folder + "/seg")
            #expect(outcome.exitStatus == 126)
            #expect(!FileManager.default.fileExists(atPath: folder + "/seg"))
        }
    }
}

/// `kho copy` and `kho rekey` carry the WAL archives: records, files and retirements, sealed again
/// under the target's key with the same identity, only what the target lacks.
@Suite struct WALCopyTests {
    @Test func copiesWhatTheTargetLacksUnderItsOwnKey() throws {
        let source = try WALFetchServerTests.repository()
        let target = try WALFetchServerTests.repository()
        let segments = try WALFetchServerTests.segments()
        let archive = try WALArchive(repository: source, source: "ho-tich")
        for segment in segments { _ = try archive.push(name: segment.name, file: segment.file, identity: WALFetchServerTests.identity) }
        let first = try WALCopy.copy(from: source, to: target)
        #expect(first.records == 1 && first.files == 3 && first.markers == 0)
        let record = try #require(try WALArchive.currentRecord(source: "ho-tich", in: target))
        for segment in segments {
            #expect(try WALArchive.fetch(name: segment.name, cluster: WALFetchServerTests.sysid, record: record, from: target) == segment.file)
        }
        // Sealed under the target's key: the source's key does not open the copy.
        let handle = segments[0].name.handle(cluster: WALFetchServerTests.sysid)
        #expect(throws: KhoError.self) { try source.openWAL(try target.storage.load(handle), cluster: WALFetchServerTests.sysid, name: segments[0].name) }
        // Nothing twice; a retirement follows.
        _ = try archive.retire(cluster: WALFetchServerTests.sysid)
        let second = try WALCopy.copy(from: source, to: target)
        #expect(second.records == 0 && second.files == 0 && second.markers == 1)
        #expect(try WALArchive.currentRecord(source: "ho-tich", in: target) == nil)
        // Only the sources asked for.
        let third = try WALFetchServerTests.repository()
        #expect(try WALCopy.copy(from: source, to: third, sources: ["dat-dai"]).records == 0)
    }
}
