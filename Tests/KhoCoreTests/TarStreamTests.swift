import Foundation
import Testing
@testable import KhoCore
import KhoSupport

// TarStream reads pg_basebackup's tar as it streams: every header is checked, because the stream
// comes from a server kho does not control.

/// Builds tar archives the way PostgreSQL's tarCreateHeader does (ustar, octal fields, base-256
/// sizes from 8 GiB), with room to break them.
struct TarBuilder {
    var bytes: [UInt8] = []

    static func header(name: [UInt8], type: UInt8, size: UInt64 = 0, mode: UInt32 = 0o600, link: [UInt8] = [],
                       base256Size: Bool = false, checksumDelta: Int = 0) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ field: Range<Int>, _ value: [UInt8]) {
            for (i, byte) in value.prefix(field.count).enumerated() { h[field.lowerBound + i] = byte }
        }
        func octal(_ field: Range<Int>, _ value: UInt64) {
            let digits = String(value, radix: 8)
            put(field, Array((String(repeating: "0", count: max(0, field.count - 1 - digits.count)) + digits).utf8))
        }
        put(0..<100, name)
        octal(100..<108, UInt64(mode))
        octal(108..<116, 26)
        octal(116..<124, 27)
        if base256Size {
            h[124] = 0x80
            var value = size
            for i in stride(from: 135, to: 124, by: -1) { h[i] = UInt8(value & 0xff); value >>= 8 }
        } else {
            octal(124..<136, size)
        }
        octal(136..<148, 1_700_000_000)
        h[156] = type
        put(157..<257, link)
        put(257..<263, Array("ustar".utf8) + [0])
        put(263..<265, Array("00".utf8))
        for i in 148..<156 { h[i] = 32 }
        let sum = h.reduce(0) { $0 + Int($1) } + checksumDelta
        octal(148..<155, UInt64(sum))
        return h
    }

    mutating func add(_ name: String, type: UInt8 = UInt8(ascii: "0"), content: [UInt8] = [], mode: UInt32 = 0o600, link: String = "") {
        add(Array(name.utf8), type: type, content: content, mode: mode, link: Array(link.utf8))
    }

    mutating func add(_ name: [UInt8], type: UInt8, content: [UInt8], mode: UInt32 = 0o600, link: [UInt8] = []) {
        bytes += TarBuilder.header(name: name, type: type, size: UInt64(content.count), mode: mode, link: link)
        bytes += content
        bytes += [UInt8](repeating: 0, count: Int(TarStream.padding(for: UInt64(content.count))))
    }

    /// One `length key=value\n` record, its length counting its own digits.
    static func paxRecord(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = Array(" \(key)=".utf8) + value + [UInt8(ascii: "\n")]
        var length = body.count + 1
        while String(length).count + body.count != length { length += 1 }
        return Array(String(length).utf8) + body
    }

    mutating func end() { bytes += [UInt8](repeating: 0, count: 1024) }

    /// A reader that hands out at most `step` bytes a call, so that headers and contents straddle
    /// reads.
    static func reader(_ bytes: [UInt8], step: Int = 777) -> TarStream.Read {
        var offset = 0
        return { out in
            let count = min(out.count, step, bytes.count - offset)
            for i in 0..<count { out[i] = bytes[offset + i] }
            offset += count
            return count
        }
    }
}

private func members(_ bytes: [UInt8], step: Int = 777) throws -> [(TarMember, [UInt8])] {
    let tar = TarStream(what: "test stream", bufferSize: 2048, read: TarBuilder.reader(bytes, step: step))
    var found: [(TarMember, [UInt8])] = []
    while let member = try tar.next() {
        var content: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 300)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try tar.readContent($0) }
            if n == 0 { break }
            content += chunk[0..<n]
        }
        found.append((member, content))
    }
    return found
}

private func refused(_ bytes: [UInt8], _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try members(bytes)
        Issue.record("the stream was accepted; expected a refusal mentioning \(text)", sourceLocation: sourceLocation)
    } catch let error as KhoError {
        #expect(error.kind == .source, sourceLocation: sourceLocation)
        #expect(error.message.contains(text), "\(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

@Suite("tar stream")
struct TarStreamTests {
    @Test("folders, files and symlinks as PostgreSQL writes them, read across small reads")
    func readsMembers() throws {
        var tar = TarBuilder()
        tar.add("base/", type: UInt8(ascii: "5"), mode: 0o700)
        tar.add("base/1/", type: UInt8(ascii: "5"), mode: 0o700)
        tar.add("base/1/112", content: randomBytes(1500, seed: 1))
        tar.add("PG_VERSION", content: Array("15\n".utf8))
        tar.add("pg_tblspc/16385/", type: UInt8(ascii: "2"), mode: 0o777, link: "/srv/ts")
        tar.add("empty", content: [])
        tar.end()
        let found = try members(tar.bytes)
        #expect(found.map(\.0.path) == ["base", "base/1", "base/1/112", "PG_VERSION", "pg_tblspc/16385", "empty"])
        #expect(found[0].0.kind == .directory && found[0].0.mode == 0o700)
        #expect(found[2].1 == randomBytes(1500, seed: 1))
        #expect(found[2].0.uid == 26 && found[2].0.gid == 27 && found[2].0.mtime == 1_700_000_000)
        #expect(found[3].1 == Array("15\n".utf8))
        #expect(found[4].0.kind == .symlink && found[4].0.linkTarget == Array("/srv/ts".utf8))
        #expect(found[5].0.size == 0 && found[5].1.isEmpty)
    }

    @Test("unread content is skipped; base-256 sizes, GNU long names and pax paths are read")
    func extensions() throws {
        var tar = TarBuilder()
        tar.add("skipped", content: randomBytes(5000, seed: 2))
        let long = String(repeating: "d/", count: 80) + "file"
        tar.add("././@LongLink", type: UInt8(ascii: "L"), content: Array(long.utf8) + [0])
        tar.add("truncated-name", content: [1, 2, 3])
        tar.add("PaxHeaders/x", type: UInt8(ascii: "x"), content: TarBuilder.paxRecord("path", Array("from/pax/name".utf8)))
        tar.add("ignored", content: [4])
        tar.bytes += TarBuilder.header(name: Array("big".utf8), type: UInt8(ascii: "0"), size: 600, base256Size: true)
        tar.bytes += randomBytes(600, seed: 3) + [UInt8](repeating: 0, count: 424)
        tar.end()
        let stream = TarStream(what: "test stream", bufferSize: 2048, read: TarBuilder.reader(tar.bytes))
        var paths: [String] = []
        while let member = try stream.next() { paths.append(member.path) }  // content never read
        #expect(paths == ["skipped", long, "from/pax/name", "big"])
        let found = try members(tar.bytes)
        #expect(found[3].1 == randomBytes(600, seed: 3))
    }

    @Test("hostile headers are refused with a clear sentence")
    func hostile() throws {
        func one(_ name: [UInt8], type: UInt8 = UInt8(ascii: "0"), content: [UInt8] = [1]) -> [UInt8] {
            var tar = TarBuilder()
            tar.add(name, type: type, content: content)
            tar.end()
            return tar.bytes
        }
        refused(one(Array("../etc/passwd".utf8)), "leaves its folder")
        refused(one(Array("base/../../x".utf8)), "leaves its folder")
        refused(one(Array("/etc/passwd".utf8)), "absolute member name")
        refused(one(Array("./".utf8)), "names no file")
        refused(one(Array("base/1/link".utf8), type: UInt8(ascii: "1")), "hard link")
        refused(one(Array("dev".utf8), type: UInt8(ascii: "3")), "only files, folders and symlinks")
        refused(one(Array("dir".utf8), type: UInt8(ascii: "5"), content: [1, 2]), "has content")
        var pax = TarBuilder()
        pax.add("PaxHeaders/x", type: UInt8(ascii: "x"), content: TarBuilder.paxRecord("path", Array("a".utf8) + [0] + Array("b/c".utf8)))
        pax.add("x", content: [1])
        pax.end()
        refused(pax.bytes, "containing NUL")
        var badPax = TarBuilder()
        badPax.add("PaxHeaders/x", type: UInt8(ascii: "x"), content: Array("99 path=a\n".utf8))
        badPax.add("x", content: [1])
        badPax.end()
        refused(badPax.bytes, "pax header")
        var checksum = TarBuilder.header(name: Array("x".utf8), type: UInt8(ascii: "0"), checksumDelta: 1)
        checksum += [UInt8](repeating: 0, count: 1024)
        refused(checksum, "checksum")
        var garbage = [UInt8](repeating: UInt8(ascii: "A"), count: 512)
        garbage += [UInt8](repeating: 0, count: 1024)
        refused(garbage, "not an octal number")
    }

    @Test("streams that end early or overrun are refused")
    func truncated() throws {
        var tar = TarBuilder()
        tar.add("base/1/112", content: randomBytes(3000, seed: 4))
        tar.end()
        let whole = tar.bytes
        refused(Array(whole[0..<2000]), "ends inside a member")
        refused(Array(whole[0..<(512 + 3072)]), "end-of-archive marker")
        refused(Array(whole[0..<300]), "ends inside a header")
        // A size larger than what follows: the stream runs out inside the member.
        var overrun = TarBuilder.header(name: Array("x".utf8), type: UInt8(ascii: "0"), size: 1 << 30)
        overrun += [UInt8](repeating: 7, count: 4096) + [UInt8](repeating: 0, count: 1024)
        refused(overrun, "ends inside a member")
        var huge = TarBuilder.header(name: Array("x".utf8), type: UInt8(ascii: "0"), size: UInt64(1) << 60, base256Size: true)
        huge += [UInt8](repeating: 0, count: 1024)
        refused(huge, "a member of")
        var after = TarBuilder()
        after.bytes += [UInt8](repeating: 0, count: 512)
        after.add("x", content: [1])
        refused(after.bytes, "header follows an end-of-archive block")
    }
}
