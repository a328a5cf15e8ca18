import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
@testable import KhoPolicy
import Testing

// The WAL agent's parts that need no cluster: source names as path components, the wire format,
// the client's answer when no agent listens, the exit codes, and how a reader judges a stall.

@Suite("WAL agent parts")
struct WALAgentUnitTests {
    @Test("source names become one safe path component, distinct names stay distinct")
    func sourceComponents() throws {
        #expect(try WALAgentPaths.component("main") == "main")
        #expect(try WALAgentPaths.component("db-1.prod_x") == "db-1.prod_x")
        #expect(try WALAgentPaths.component("../etc") == "%2E.%2Fetc")
        #expect(try WALAgentPaths.component("a/b") == "a%2Fb")
        #expect(try WALAgentPaths.component("a%2Fb") == "a%252Fb")
        #expect(try WALAgentPaths.component("sở tư pháp") != WALAgentPaths.component("so tu phap"))
        #expect(throws: KhoError.self) { try WALAgentPaths.component("") }
        #expect(throws: KhoError.self) { try WALAgentPaths.component(String(repeating: "/", count: 40)) }
        #expect(try WALAgentPaths.socket(source: "x y") == "/run/kho/wal/x%20y.sock")
    }

    @Test("requests carry only a WAL file name; answers keep their outcome")
    func wireFormat() throws {
        let name = try WALFileName(parsing: "00000001000000000000002A")
        #expect(try WALAgentProtocol.parseRequest(WALAgentProtocol.request(name: name)) == name)
        var forged = WALAgentProtocol.request(name: name)
        forged[4] = 3
        #expect(throws: KhoError.self) { try WALAgentProtocol.parseRequest(forged) }
        #expect(throws: KhoError.self) { try WALAgentProtocol.parseRequest(WALAgentProtocol.requestMagic + [9] + Array("../../x/y".utf8)) }
        for answer in [WALAgentAnswer.ok("fine"), .refused("no"), .failed("later"), .denied("who")] {
            #expect(WALAgentProtocol.parseAnswer(WALAgentProtocol.answer(answer)) == answer)
        }
        if case .failed = WALAgentProtocol.parseAnswer(Array("garbage".utf8)) {} else { Issue.record("garbage is not a failure") }
        #expect(WALAgentAnswer.ok("").exitCode == .success)
        #expect(WALAgentAnswer.refused("").exitCode == .integrity)
        #expect(WALAgentAnswer.denied("").exitCode == .failure)
        #expect(WALAgentAnswer.unavailable("").exitCode == .failure)
    }

    @Test("a file's identity stays while it is untouched and changes with any write, a rename or another file under the name")
    func fileIdentity() throws {
        let folder = try ServerSupport.makeTemporaryFolder("wal-identity")
        defer { try? removeTree(folder) }
        let path = folder + "/000000010000000000000001"
        try writeFile(path, [UInt8](repeating: 7, count: 8192))
        func identity(_ path: String) throws -> WALFileIdentity {
            let fd = open(path, O_RDONLY)
            try #require(fd >= 0)
            defer { close(fd) }
            return try WALFileIdentity(descriptor: fd, shown: path)
        }
        let first = try identity(path)
        #expect(try identity(path) == first, "reading changes nothing")
        usleep(10_000)
        // One byte rewritten with the same value still moves the change time.
        let fd = open(path, O_WRONLY)
        try #require(fd >= 0)
        var seven: UInt8 = 7
        #expect(pwrite(fd, &seven, 1, 100) == 1)
        close(fd)
        let written = try identity(path)
        #expect(written != first, "a write changes the identity")
        usleep(10_000)
        try #require(rename(path, path + ".moved") == 0 && rename(path + ".moved", path) == 0)
        #expect(try identity(path) != written, "a rename (as PostgreSQL recycles a segment) changes it")
        let replaced = try identity(path)
        try #require(unlink(path) == 0)
        try writeFile(path, [UInt8](repeating: 7, count: 8192))
        #expect(try identity(path) != replaced, "another file under the name is another identity")
    }

    @Test("with no agent listening the client says so and PostgreSQL retries")
    func noAgent() throws {
        let folder = try TemporaryFolder("wal-client")
        let file = try folder.write("000000010000000000000001", "x")
        let fd = open(file, O_RDONLY)
        defer { close(fd) }
        let answer = try WALAgentClient.push(source: "main", fileDescriptor: fd, name: try WALFileName(parsing: "000000010000000000000001"),
                                             timeout: 2, socketPath: folder.path + "/none.sock")
        guard case .unavailable(let message) = answer else { Issue.record("\(answer)"); return }
        #expect(message.contains("kho wal serve"))
    }

    @Test("a state folder other users can write is refused: its ledger decides what is answered without pushing")
    func stateFolder() throws {
        let folder = try TemporaryFolder("wal-state")
        let state = folder.path + "/state"
        try WALAgent.prepareStateDirectory(state)
        var info = stat()
        #expect(lstat(state, &info) == 0 && info.st_mode & 0o777 == 0o700)
        #expect(chmod(state, 0o770) == 0)
        #expect(throws: KhoError.self) { try WALAgent.prepareStateDirectory(state) }
        #expect(chmod(state, 0o700) == 0)
        let ledger = try WALPushedLedger(path: state + "/main.pushed")
        #expect(throws: KhoError.self) { _ = try WALPushedLedger(path: state + "/main.pushed") }
        let name = try WALFileName(parsing: "000000010000000000000005")
        let cluster = SystemIdentifier(0x7000_0000_0000_0001)
        let digest = try SHA256.hash(Array("x".utf8))
        try ledger.append(name: name, cluster: cluster, digest: digest)
        #expect(ledger.digest(of: name, cluster: cluster) == digest)
        #expect(ledger.digest(of: name, cluster: SystemIdentifier(2)) == nil, "a rebuilt cluster's names start again")
        _ = ledger
        // A torn last line (a crash mid-append) is skipped; what was complete is read back.
        let fd = open(state + "/other.pushed", O_WRONLY | O_CREAT, 0o600)
        let text = Array("\(cluster)/\(name) \(digest.hex)\n\(cluster)/000000010000000000000006 ab".utf8)
        #expect(text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == text.count)
        close(fd)
        let reread = try WALPushedLedger(path: state + "/other.pushed")
        #expect(reread.digest(of: name, cluster: cluster) == digest)
        #expect(reread.digest(of: try WALFileName(parsing: "000000010000000000000006"), cluster: cluster) == nil)

        // A long-running agent's file is compacted to the newest entries.
        let small = try WALPushedLedger(path: state + "/small.pushed", kept: 4)
        for n in 1...9 { try small.append(name: try WALFileName(parsing: String(format: "0000000100000000000000%02X", n)), cluster: cluster, digest: digest) }
        let kept = try String(contentsOfFile: state + "/small.pushed", encoding: .utf8).split(separator: "\n")
        #expect(kept.count == 4, "\(kept)")
        #expect(small.digest(of: try WALFileName(parsing: "000000010000000000000009"), cluster: cluster) == digest)
    }

    @Test("a reader sees a stopped or silent agent with waiting files as stalled")
    func stallAssessment() throws {
        let now = Date()
        var status = WALAgentStatus(source: "main", dataDirectory: "/d", started: now.addingTimeInterval(-600), stallAfter: 60)
        status.updated = now.addingTimeInterval(-1)
        let empty = WALReadyQueue.Look(names: [], oldestReady: nil)
        let young = WALReadyQueue.Look(names: [try WALFileName(parsing: "000000010000000000000003")], oldestReady: now.addingTimeInterval(-5))
        let old = WALReadyQueue.Look(names: [try WALFileName(parsing: "000000010000000000000003")], oldestReady: now.addingTimeInterval(-120))
        #expect(!status.assessed(now: now, queue: empty).stalled)
        #expect(!status.assessed(now: now, queue: young).stalled)
        #expect(status.assessed(now: now, queue: old).stalled)
        status.lastPush = now.addingTimeInterval(-2)
        #expect(!status.assessed(now: now, queue: old).stalled, "an old queue that is moving: catching up")
        status.lastPush = nil
        status.consecutiveFailures = WALAgentStatus.failureLimit
        #expect(status.assessed(now: now, queue: young).stalled, "a running agent that keeps failing")
        status.consecutiveFailures = 0
        status.updated = now.addingTimeInterval(-300)
        let silent = status.assessed(now: now, queue: young)
        #expect(!silent.running && silent.stalled, "an agent that no longer writes its file, with files waiting")
        #expect(!status.assessed(now: now, queue: empty).stalled, "nothing waiting, nothing stalled")

        // As kho status reads it: the file, judged against the queue of the data directory it names.
        let folder = try TemporaryFolder("wal-status")
        for sub in ["data", "data/pg_wal", "data/pg_wal/archive_status"] { #expect(mkdir(folder.path + "/" + sub, 0o700) == 0) }
        _ = try folder.write("data/pg_wal/archive_status/000000010000000000000003.ready", "")
        status.dataDirectory = folder.path + "/data"
        #expect(try WALAgentStatus.current(source: "main", stateDirectory: folder.path) == nil)
        try status.write(path: try WALAgentPaths.status(source: "main", stateDirectory: folder.path))
        let read = try #require(try WALAgentStatus.current(source: "main", stateDirectory: folder.path, now: now.addingTimeInterval(1)))
        #expect(read.readyFiles == 1 && !read.running && read.stalled)
    }
}
