import Foundation
import Testing
@testable import KhoCore
import KhoSupport

/// The binary log archive without a server: names from the server confined, event runs cut at
/// event boundaries, pieces stored once (the same bytes again succeed, other bytes are refused),
/// the archive's server recorded, continuity from a dump's position.
@Suite struct BinlogArchiveTests {
    /// An event of `size` bytes logged at `time` (the common v4 header, then filler).
    static func event(time: UInt32, size: Int = 40) -> [UInt8] {
        var bytes = [UInt8](repeating: 0x5a, count: size)
        func put(_ value: UInt32, at offset: Int) { for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) } }
        put(time, at: 0)
        bytes[4] = 2
        put(11, at: 5)
        put(UInt32(size), at: 9)
        return bytes
    }

    static func repository() throws -> (Repository, MemoryStorage) {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        let storage = MemoryStorage()
        return (try Repository.create(storage: storage, password: Array("test password".utf8), options: options), storage)
    }

    static let server = BinlogServerIdentity(serverId: 11, gtidDomainId: 0, basename: "kho-bin", version: "10.11.19-MariaDB")

    @Test("file names from the server: only [A-Za-z0-9._-], no leading dot or dash, no '..', a number at the end; archive ids")
    func names() throws {
        let name = try BinlogFileName("mariadb-bin.000042")
        #expect(name.basename == "mariadb-bin" && name.number == 42)
        #expect(try name.isFollowed(by: BinlogFileName("mariadb-bin.000043")))
        #expect(try !name.isFollowed(by: BinlogFileName("other-bin.000043")))
        for hostile in ["../x.000001", "a/b.000001", ".hidden.000001", "-rf.000001", "bin", "bin.", "bin.x1", "bin..000001", "bin .000001", "bin.00000000001", ""] {
            #expect(throws: KhoError.self, "\(hostile)") { try BinlogFileName(hostile) }
        }
        #expect(try BinlogArchiveID(source: "ho-tich_01").description == "ho-tich_01")
        let hashed = try BinlogArchiveID(source: "hộ tịch/../x").description
        #expect(hashed.hasPrefix("s-") && hashed.count == 18)
    }

    @Test("a run of events: whole events only, the magic at the file's start, times of the first and last; an event shorter than its header refuses")
    func scan() throws {
        let run = BinlogEvents.magic + BinlogArchiveTests.event(time: 100) + BinlogArchiveTests.event(time: 0) + BinlogArchiveTests.event(time: 105)
        let partial = run + Array(BinlogArchiveTests.event(time: 110).prefix(25))
        let scan = try partial.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: true, limit: 1 << 20, file: "f.1") }
        #expect(scan.wholeBytes == run.count && scan.events == 3 && scan.firstTime == 100 && scan.lastTime == 105)
        let limited = try run.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: true, limit: 50, file: "f.1") }
        #expect(limited.wholeBytes == 44 && limited.events == 1)
        let nothing = try BinlogEvents.magic.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: true, limit: 1 << 20, file: "f.1") }
        #expect(nothing.wholeBytes == 0)
        var broken = BinlogArchiveTests.event(time: 1)
        broken[9] = 5
        #expect(throws: KhoError.self) { try broken.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: false, limit: 1 << 20, file: "f.1") } }
        #expect(throws: KhoError.self) { try [UInt8](repeating: 0, count: 30).withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: true, limit: 1 << 20, file: "f.1") } }
        let last = run.withUnsafeBytes { BinlogEvents.lastTime($0, atFileStart: true, before: 105) }
        #expect(last.last == 100 && last.passed)
    }

    @Test("pieces stored once: a repeat with the same bytes succeeds, other bytes under the name are refused; another server is refused; a piece saved under another name does not open")
    func pushing() throws {
        let (repository, storage) = try BinlogArchiveTests.repository()
        let archive = try BinlogArchive(repository: repository, source: "reg")
        try archive.claim(for: BinlogArchiveTests.server)
        let file = try BinlogFileName("kho-bin.000001")
        let first = BinlogEvents.magic + BinlogArchiveTests.event(time: 100)
        let scan = try first.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: true, limit: 1 << 20, file: "x") }
        #expect(try archive.push(file: file, offset: 0, bytes: first, scan: scan) == .stored)
        #expect(try archive.push(file: file, offset: 0, bytes: first, scan: scan) == .repeated)
        var other = first
        other[30] ^= 1
        #expect(throws: KhoError.self) { try archive.push(file: file, offset: 0, bytes: other, scan: scan) }
        var intruder = BinlogArchiveTests.server
        intruder.serverId = 12
        #expect(throws: KhoError.self) { try archive.claim(for: intruder) }

        // An authentic piece copied under another piece's name does not open.
        let piece = BinlogPiece(file: file, offset: 0, length: first.count)
        let moved = BinlogPiece(file: try BinlogFileName("kho-bin.000002"), offset: 0, length: first.count)
        try storage.save(BinlogObject.pieceHandle(archive.id, moved), data: try storage.load(BinlogObject.pieceHandle(archive.id, piece)))
        #expect(throws: KhoError.self) { try archive.load(moved) }
        #expect(try archive.load(piece).bytes == first)
    }

    @Test("continuity from a dump's position: whole files in order reach the newest; a missing file, a hole or a file without its end is a gap")
    func continuity() throws {
        let (repository, storage) = try BinlogArchiveTests.repository()
        let archive = try BinlogArchive(repository: repository, source: "reg")
        try archive.claim(for: BinlogArchiveTests.server)
        var names: [BinlogFileName] = []
        for n in 1...4 {
            let file = try BinlogFileName("kho-bin.00000\(n)")
            names.append(file)
            let head = BinlogEvents.magic + BinlogArchiveTests.event(time: UInt32(100 * n))
            let tail = BinlogArchiveTests.event(time: UInt32(100 * n + 50))
            for (offset, bytes) in [(0, head), (head.count, tail)] {
                let scan = try bytes.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: offset == 0, limit: 1 << 20, file: "x") }
                try archive.push(file: file, offset: UInt64(offset), bytes: bytes, scan: scan)
            }
            if n < 4 { try archive.markEnded(file: file, size: UInt64(head.count + tail.count), lastEvent: UInt32(100 * n + 50)) }
        }
        let whole = try BinlogChain.from(try archive.inventory(), file: names[1], position: 44) { try archive.fileEnd($0).size }
        #expect(whole.files.map(\.name) == Array(names[1...]) && whole.gap == nil)
        #expect(try archive.summary(times: true).gaps.isEmpty)

        try storage.remove(BinlogObject.pieceHandle(archive.id, BinlogPiece(file: names[2], offset: 0, length: 44)))
        let holed = try BinlogChain.from(try archive.inventory(), file: names[1], position: 44) { try archive.fileEnd($0).size }
        #expect(holed.files.map(\.name) == [names[1], names[2]] && holed.gap?.contains("hole") == true, "\(holed.gap ?? "")")
        try storage.remove(BinlogObject.pieceHandle(archive.id, BinlogPiece(file: names[2], offset: 44, length: 40)))
        try storage.remove(BinlogObject.endHandle(archive.id, names[2]))
        let missing = try BinlogChain.from(try archive.inventory(), file: names[0], position: 4) { try archive.fileEnd($0).size }
        #expect(missing.files.map(\.name) == [names[0], names[1]] && missing.gap?.contains("not in the archive") == true, "\(missing.gap ?? "")")
        #expect(try !archive.summary(times: false).gaps.isEmpty)
        let notYet = try BinlogChain.from(try archive.inventory(), file: names[3], position: 500) { try archive.fileEnd($0).size }
        #expect(notYet.files.isEmpty && notYet.gap != nil)
    }
}

/// `kho copy`, `kho rekey` and policy copies carry the binary log archives: the record, pieces and
/// end markers, sealed again under the target's key with the same names, only what the target lacks.
@Suite struct BinlogCopyTests {
    @Test("copies what the target lacks under its own key; a file's end after its pieces; only the sources asked for")
    func copiesWhatTheTargetLacks() throws {
        let (source, _) = try BinlogArchiveTests.repository()
        let (target, targetStorage) = try BinlogArchiveTests.repository()
        let archive = try BinlogArchive(repository: source, source: "reg")
        try archive.claim(for: BinlogArchiveTests.server)
        let first = try BinlogFileName("kho-bin.000001")
        let head = BinlogEvents.magic + BinlogArchiveTests.event(time: 100)
        let tail = BinlogArchiveTests.event(time: 150)
        func push(_ file: BinlogFileName, _ offset: Int, _ bytes: [UInt8]) throws {
            let scan = try bytes.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: offset == 0, limit: 1 << 20, file: "x") }
            try archive.push(file: file, offset: UInt64(offset), bytes: bytes, scan: scan)
        }
        try push(first, 0, head)
        try push(first, head.count, tail)

        let once = try BinlogCopy.copy(from: source, to: target)
        #expect(once.records == 1 && once.pieces == 2 && once.ends == 0 && once.bytes == Int64(head.count + tail.count))
        let copied = try BinlogArchive(repository: target, source: "reg")
        #expect(try copied.record() == archive.record())
        let piece = BinlogPiece(file: first, offset: 0, length: head.count)
        #expect(try copied.load(piece).bytes == head)
        // Sealed under the target's key: the source's key does not open the copy.
        #expect(throws: KhoError.self) {
            try BinlogObject.openPiece(try targetStorage.load(BinlogObject.pieceHandle(archive.id, piece)), archive: archive.id, piece: piece, sealer: try source.makeSealer())
        }

        // The file ends and the next begins: only those are added.
        try archive.markEnded(file: first, size: UInt64(head.count + tail.count), lastEvent: 150)
        let second = try BinlogFileName("kho-bin.000002")
        try push(second, 0, head)
        let again = try BinlogCopy.copy(from: source, to: target)
        #expect(again.records == 0 && again.pieces == 1 && again.ends == 1)
        let chain = try BinlogChain.from(try copied.inventory(), file: first, position: 4) { try copied.fileEnd($0).size }
        #expect(chain.files.map(\.name) == [first, second] && chain.gap == nil)
        #expect(try BinlogCopy.copy(from: source, to: target) == BinlogCopy.Summary())

        let (other, _) = try BinlogArchiveTests.repository()
        #expect(try BinlogCopy.copy(from: source, to: other, sources: ["dat-dai"]) == BinlogCopy.Summary())
        #expect(try BinlogCopy.copy(from: source, to: other, sources: ["reg"]).pieces == 3)
    }
}
