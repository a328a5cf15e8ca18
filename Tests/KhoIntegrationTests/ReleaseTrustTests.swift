import Foundation
import KhoTestSupport
import Glibc
@testable import KhoCore
import KhoSupport
import KhoStorage
import Testing

/// Issue 16: what the release build writes. These run in both lanes of scripts/test; in the release
/// lane (KHO_TEST_LANE=release) the binary is the release build and this file is compiled with
/// optimization, so a nonce drawn inside an assertion would show here as a repeat.
@Suite struct ReleaseTrustTests {
    /// Every nonce of a repository, read without kho's own check: each snapshot and index file, each
    /// pack header and each blob. Returns the nonces that two different objects share.
    static func repeatedNonces(repository path: String, password: String) throws -> (count: Int, repeats: [String: [String]]) {
        let storage = LocalStorage(path: path)
        let repository = try Repository.open(storage: storage, password: Array(password.utf8))
        var users: [[UInt8]: Set<String>] = [:]
        var count = 0
        func note(_ nonce: ArraySlice<UInt8>, _ object: String) {
            users[Array(nonce), default: []].insert(object)
            count += 1
        }
        for kind in [FileKind.snapshot, .index, .anchor, .drill] {
            for file in try storage.list(kind) {
                let bytes = try storage.load(Handle(kind, file.name))
                note(bytes[0..<12], "\(kind.folder)/\(file.name)")
            }
        }
        for file in try storage.list(.data) {
            let bytes = try storage.load(Handle(.data, file.name))
            let length = bytes.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self))) }
            let headerStart = bytes.count - 4 - length
            note(bytes[headerStart..<(headerStart + 12)], "header of pack \(file.name)")
            for blob in try repository.packHeader(of: bytes, name: file.name) {
                // Copies of one blob are the same message; only different blobs may not share.
                note(bytes[Int(blob.offset)..<(Int(blob.offset) + 12)], "blob \(blob.id.hex)")
            }
        }
        return (count, users.filter { $0.value.count > 1 }.reduce(into: [:]) { $0[Hex.encode($1.key)] = $1.value.sorted() })
    }

    @Test("the kho under test writes no nonce twice: a tree and a stream backed up several times, every sealed file, pack header and blob compared; check agrees")
    func noRepeatedNonce() throws {
        let sandbox = try Sandbox("nonces")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data + "/ho-so")
        for round in 0..<3 {
            try writeFile(data + "/ho-so/\(round).pdf", randomBytes(300_000))
            try writeFile(data + "/dump-\(round).sql", dumpText(1 << 20, seed: UInt64(round)))
            try sandbox.ok("backup", data, "--tag", "round-\(round)")
            let stream = sandbox.path("stream-\(round).sql")
            try writeFile(stream, dumpText(2 << 20, seed: UInt64(100 + round)))
            try sandbox.ok("backup", "--stdin", "--stdin-name", "ho_tich.sql", input: .file(stream))
        }
        let (count, repeats) = try Self.repeatedNonces(repository: sandbox.repo, password: sandbox.password)
        #expect(count > 30, "too few sealed objects to mean anything: \(count)")
        #expect(repeats.isEmpty, "nonces used twice: \(repeats)")

        let check = try sandbox.kho("check", "--read-data", "--json")
        try #require(check.exitCode == 0, "\(check)")
        let report = try #require(try check.json() as? [String: Any])
        #expect((report["noncesCompared"] as? Int ?? 0) == count, "\(report)")
        #expect((report["repeatedNonces"] as? [Any])?.isEmpty == true)
    }

    /// A repository as release builds before this fix wrote it: every nonce zero. Made in-process
    /// with the engine's test-only nonce source, which no command line can reach.
    static func damagedRepository(at path: String, password: String, data: String) throws -> [Snapshot] {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        let repository = try Repository.create(storage: LocalStorage(path: path), password: Array(password.utf8), options: options,
                                               logger: .init(label: "test"), nonces: .repeatedForTesting)
        var snapshots: [Snapshot] = []
        for (round, tag) in ["dem-1", "dem-2"].enumerated() {
            try writeFile(data + "/ho-so/\(round).pdf", randomBytes(200_000))
            var backup = BackupOptions()
            backup.tags = [tag]
            backup.time = Date(timeIntervalSince1970: 1_790_000_000 + Double(round) * 86_400 + 0.123456)
            let archiver = try Archiver(repository: repository, index: try repository.loadIndex(), options: backup) { _ in }
            snapshots.append(try archiver.backup(paths: [data]))
        }
        // A database dump with its manifest, as a PostgreSQL source stores it.
        var stream = BackupOptions()
        stream.tags = ["nightly"]
        stream.hostname = "db1.so-tu-phap"
        stream.time = Date(timeIntervalSince1970: 1_790_100_000.5)
        stream.source = SnapshotSource(kind: "postgres", name: "ho-tich-db")
        let dump = dumpText(1 << 20, seed: 7)
        let manifest = JSONValue.object(["tables": .array([.object(["name": .string("cong_dan"), "rows": .number(1234), "checksum": .string("98765")])])])
        let archiver = try Archiver(repository: repository, index: try repository.loadIndex(), options: stream) { _ in }
        var offset = 0
        snapshots.append(try archiver.backupStreams([Archiver.StreamInput(name: "ho_tich.sql", open: {
            ({ buffer in
                let n = min(buffer.count, dump.count - offset)
                dump.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
                offset += n
                return n
            }, {})
        })], sourceName: "ho-tich-db", beforeCommit: { _ in manifest }))
        return snapshots
    }

    @Test("a repository with repeated nonces: check names them (exit 12) and what to run; kho rekey moves every snapshot to a fresh key, checks it, and only then says the old one can be retired")
    func repeatedNoncesAreFoundAndHealed() throws {
        let sandbox = try Sandbox("rekey")
        let data = sandbox.path("data")
        try makeDirectories(data + "/ho-so")
        let old = sandbox.path("old")
        let made = try Self.damagedRepository(at: old, password: sandbox.password, data: data)
        #expect(try !Self.repeatedNonces(repository: old, password: sandbox.password).repeats.isEmpty)

        let oldEnv: [String: String?] = ["KHO_REPOSITORY": old]
        let check = try sandbox.kho(["check"], env: oldEnv)
        #expect(check.exitCode == 12, "\(check)")
        #expect(check.out.contains("is used by"), "\(check)")
        #expect(check.out.contains("snapshots/"), "the snapshot files are named: \(check)")
        #expect(check.out.contains("kho rekey --from-repo \(old) --to-repo NEW"), "\(check)")
        let readData = try sandbox.kho(["check", "--read-data", "--json"], env: oldEnv)
        #expect(readData.exitCode == 12, "\(readData)")
        let oldReport = try #require(try readData.json() as? [String: Any])
        let repeated = try #require(oldReport["repeatedNonces"] as? [[String: Any]])
        #expect(repeated.contains { ($0["objects"] as? [String] ?? []).contains { $0.hasPrefix("blob ") } }, "blobs are compared with --read-data")

        // The move: a new place, a new password.
        let new = sandbox.path("new")
        let env: [String: String?] = ["KHO_REPOSITORY": new, "KHO_PASSWORD": "mat khau moi", "KHO_FROM_PASSWORD": sandbox.password]
        let rekey = try sandbox.kho(["rekey", "--from-repo", old], env: env)
        try #require(rekey.exitCode == 0, "\(rekey)")
        #expect(rekey.out.contains("can now be retired"), "\(rekey)")
        let again = try sandbox.kho(["rekey", "--from-repo", old], env: env)
        #expect(again.exitCode == 0 && again.out.contains("0 snapshots copied, 3 there already"), "a second run copies nothing: \(again)")

        let newCheck = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(newCheck.exitCode == 0, "\(newCheck)")
        let (count, repeats) = try Self.repeatedNonces(repository: new, password: "mat khau moi")
        #expect(count > 10)
        #expect(repeats.isEmpty, "\(repeats)")

        // Every snapshot with its time, host, tags, source and manifest, and byte-identical content.
        let moved = try Repository.open(storage: LocalStorage(path: new), password: Array("mat khau moi".utf8)).listSnapshots()
        #expect(moved.count == made.count)
        for original in made {
            let copy = try #require(moved.first { $0.time == original.time }, "snapshot of \(original.time) missing")
            #expect(copy.hostname == original.hostname && copy.tags == original.tags && copy.paths == original.paths)
            #expect(copy.source == original.source && copy.manifest == original.manifest && copy.username == original.username)
            let fromOld = sandbox.path("restore-old-\(original.id!.prefix(8))")
            let fromNew = sandbox.path("restore-new-\(copy.id!.prefix(8))")
            try sandbox.ok("restore", original.id!, "--target", fromOld, env: oldEnv)
            try sandbox.ok("restore", copy.id!, "--target", fromNew, env: env)
            // The folders above the backed-up path are made by the restore, with its own times.
            let below = original.paths == [data] ? data : ""
            // (The target folder itself is made by the restore too.)
            let differences = try Manifest.of(fromNew + below).differences(from: try Manifest.of(fromOld + below)).filter { !$0.hasPrefix(": ") }
            #expect(differences.isEmpty, "\(differences)")
            #expect(try Manifest.of(fromNew + below).entries.count > 1)
        }
        #expect(moved.contains { $0.manifest != nil })
    }

    @Test("the config is bound to the key: an edited config (append-only removed, sizes changed) or one stripped of its authenticator is an integrity error")
    func configIsAuthenticated() throws {
        let sandbox = try Sandbox("config")
        try sandbox.initRepository("--append-only")
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a", randomBytes(10_000))
        try sandbox.ok("backup", data)
        let configPath = sandbox.repo + "/config"
        let original = try readFile(configPath)
        let text = String(decoding: original, as: UTF8.self)
        #expect(text.contains("\"authenticator\""))

        func expectRefused(_ edited: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try writeFile(configPath, Array(edited.utf8), mode: 0o600)
            let result = try sandbox.kho("snapshots")
            #expect(result.exitCode == 12, "\(what): \(result)", sourceLocation: sourceLocation)
            #expect(result.err.contains("config"), "\(what): \(result)", sourceLocation: sourceLocation)
            let forget = try sandbox.kho("forget", "latest")
            #expect(forget.exitCode == 12, "\(what): forget must not follow the edited config: \(forget)", sourceLocation: sourceLocation)
        }
        try expectRefused(text.replacingOccurrences(of: "\"appendOnly\" : true", with: "\"appendOnly\" : false"), "append-only switched off")
        try expectRefused(text.replacingOccurrences(of: "\"packSize\" : 16777216", with: "\"packSize\" : 1048576"), "pack size changed")
        let stripped = text.split(separator: "\n").filter { !$0.contains("\"authenticator\"") }.joined(separator: "\n")
        try expectRefused(stripped, "authenticator removed")
        try writeFile(configPath, original, mode: 0o600)
        try sandbox.ok("snapshots")
        #expect(try sandbox.kho("check").exitCode == 0)
    }

    @Test("a repository made before configs were authenticated opens, and kho upgrade binds it; after that an edit is refused")
    func legacyConfigUpgrades() throws {
        let sandbox = try Sandbox("legacy")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a", randomBytes(10_000))
        try sandbox.ok("backup", data)
        // Rewrite it as an older kho left it: no authenticator, a key file without the binding byte.
        let storage = LocalStorage(path: sandbox.repo)
        let repository = try Repository.open(storage: storage, password: Array(sandbox.password.utf8))
        var legacy = repository.config
        legacy.authenticator = nil
        try storage.save(.config, data: Array(try JSON.prettyEncoder.encode(legacy)))
        let legacyKey = try KeyFile.make(master: repository.key, password: Array(sandbox.password.utf8), label: "old",
                                         parameters: Scrypt.minimum, configAuthenticated: false)
        let keyBytes = try legacyKey.encoded()
        try storage.save(Handle(.key, try SHA256.hash(keyBytes).hex), data: keyBytes)
        try storage.remove(Handle(.key, repository.keyID))

        let opened = try sandbox.kho("snapshots")
        #expect(opened.exitCode == 0, "\(opened)")
        #expect(opened.err.contains("kho upgrade"), "the operator is told: \(opened)")
        let check = try sandbox.kho("check")
        #expect(check.exitCode == 0 && check.all.contains("the config is not authenticated"), "check warns: \(check)")
        let upgrade = try sandbox.kho("upgrade")
        #expect(upgrade.exitCode == 0 && upgrade.out.contains("now bound"), "\(upgrade)")
        let quiet = try sandbox.kho("snapshots")
        #expect(quiet.exitCode == 0 && !quiet.err.contains("kho upgrade"), "\(quiet)")
        // Stripping the authenticator again no longer passes for an old repository.
        let text = String(decoding: try readFile(sandbox.repo + "/config"), as: UTF8.self)
        let stripped = text.split(separator: "\n").filter { !$0.contains("\"authenticator\"") }.joined(separator: "\n")
        try writeFile(sandbox.repo + "/config", Array(stripped.utf8), mode: 0o600)
        #expect(try sandbox.kho("snapshots").exitCode == 12)
    }

    @Test("KHO_TEST_SCRYPT_N: honoured by a debug build only; a release build refuses it rather than make a weak key")
    func testScryptKnob() throws {
        let sandbox = try Sandbox("knob")
        let result = try sandbox.kho(["init"], env: ["KHO_TEST_SCRYPT_N": "1024"])
        if Harness.releaseLane {
            #expect(result.exitCode == 2, "\(result)")
            #expect(result.err.contains("KHO_TEST_SCRYPT_N"), "\(result)")
            #expect(!FileManager.default.fileExists(atPath: sandbox.repo + "/config"), "nothing was created")
        } else {
            #expect(result.exitCode == 0, "\(result)")
        }
    }

    @Test("a release build refuses to run with any test-only knob set (a clock, a prune grace, a lock refresh, a pause); a debug build honours them",
          arguments: ["KHO_TEST_NOW", "KHO_TEST_PRUNE_GRACE", "KHO_TEST_LOCK_REFRESH", "KHO_TEST_DRILL_PAUSE", "KHO_TEST_PRUNE_PAUSE"])
    func testKnobsRefusedByRelease(knob: String) throws {
        let sandbox = try Sandbox("knobs")
        try sandbox.initRepository()
        let value = knob == "KHO_TEST_NOW" ? "2030-01-01T00:00:00Z" : "1"
        let result = try sandbox.kho(["snapshots"], env: [knob: value])
        if Harness.releaseLane {
            #expect(result.exitCode == 2, "\(result)")
            #expect(result.err.contains(knob) && result.err.contains("unset it"), "\(result)")
        } else {
            #expect(result.exitCode == 0, "\(result)")
        }
    }

    @Test("planted key files: one below the scrypt floor and one above the ceiling are skipped with a warning; a costly accepted one is tried after the genuine key")
    func plantedKeyFiles() throws {
        let sandbox = try Sandbox("keys")
        try sandbox.initRepository()
        let storage = LocalStorage(path: sandbox.repo)
        let repository = try Repository.open(storage: storage, password: Array(sandbox.password.utf8))
        func plant(_ parameters: Scrypt.Parameters, password: String) throws -> String {
            let salt = try Random.bytes(32)
            let wrapping = try Scrypt.derive(password: Array(password.utf8), salt: salt, parameters: parameters, length: 32)
            let sealed = try Sealer(key: wrapping).seal(repository.key.serialized + [1], context: KeyFile.context)
            let file = KeyFile(version: 1, created: Date(), host: "x", user: "x", label: "planted", kdf: .scrypt,
                               scrypt: parameters, salt: Data(salt), sealedMasterKey: Data(sealed))
            let bytes = try file.encoded()
            let name = try SHA256.hash(bytes).hex
            try storage.save(Handle(.key, name), data: bytes)
            return name
        }
        let cheap = try plant(Scrypt.Parameters(n: 16, r: 1, p: 1), password: "cheap")
        let refused = try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": "cheap"])
        #expect(refused.exitCode == 11, "a key below the floor does not open: \(refused)")
        #expect(refused.err.contains("keys/\(cheap.prefix(8))") && refused.err.contains("floor"), "\(refused)")

        // Above the ceiling: written as a file only (deriving it would take the gigabytes it asks for).
        var huge = try KeyFile.make(master: repository.key, password: [1], label: "huge", parameters: Scrypt.minimum)
        huge.scrypt = Scrypt.Parameters(n: 1 << 22, r: 8, p: 1)
        let hugeBytes = try huge.encoded()
        try storage.save(Handle(.key, try SHA256.hash(hugeBytes).hex), data: hugeBytes)
        // Accepted but dear (128 MiB): tried after the genuine one, so the genuine password stays quick.
        _ = try plant(Scrypt.Parameters(n: 1 << 17, r: 8, p: 1), password: "dear")
        let genuine = try sandbox.kho("snapshots")
        #expect(genuine.exitCode == 0, "\(genuine)")
        // Every key file is tried with a wrong password: the refused ones are named, none is derived.
        let wrong = try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": "nobody's"])
        #expect(wrong.exitCode == 11, "\(wrong)")
        #expect(wrong.err.contains("ceiling") && wrong.err.contains("floor"), "\(wrong)")
        let dear = try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": "dear"])
        #expect(dear.exitCode == 0, "a dear key within the ceiling still opens: \(dear)")
    }
}
