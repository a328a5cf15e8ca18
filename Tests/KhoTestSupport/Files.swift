import Foundation
import Glibc
import KhoCore
import KhoSupport
import Testing

@_silgen_name("getrandom") private func systemGetrandom(_ buffer: UnsafeMutableRawPointer, _ count: Int, _ flags: UInt32) -> Int

// MARK: files

package func readFile(_ path: String) throws -> [UInt8] {
    let fd = try check("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
    defer { close(fd) }
    return try readAll(fd, path)
}

package func readAll(_ fd: Int32, _ path: String) throws -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = try buffer.withUnsafeMutableBytes { raw in
            try check("read", path) { read(fd, raw.baseAddress, raw.count) }
        }
        if n == 0 { return out }
        out.append(contentsOf: buffer[0..<n])
    }
}

package func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
    let fd = try check("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
    defer { close(fd) }
    try writeAll(fd, bytes, path)
}

package func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws {
    try bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            done += try check("write", path) { write(fd, raw.baseAddress! + done, raw.count - done) }
        }
    }
}

package func makeDirectories(_ path: String) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
}

/// Random bytes from the kernel (incompressible).
package func randomBytes(_ count: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        var done = 0
        while done < raw.count {
            let n = systemGetrandom(raw.baseAddress! + done, raw.count - done, 0)
            if n > 0 { done += n }
        }
    }
    return out
}

/// Pseudo-random but compressible text: lines like a SQL dump, of about `count` bytes.
package func dumpText(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    let words: [[UInt8]] = ["Nguyễn", "Trần", "Lê", "Phạm", "Văn", "Thị", "Minh", "Ngọc", "An", "Bình", "Châu", "Dũng",
                            "Quảng Ngãi", "Nghĩa Hành", "Sơn Tịnh", "thôn", "xã", "huyện"].map { Array($0.utf8) }
    let prefix = Array("INSERT INTO cong_dan VALUES (".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(count + 200)
    var row = 0
    while out.count < count {
        row += 1
        out.append(contentsOf: prefix)
        out.append(contentsOf: String(row).utf8)
        out.append(contentsOf: ", '".utf8)
        for _ in 0..<3 {
            out.append(contentsOf: words[Int(rng.next() % UInt64(words.count))])
            out.append(0x20)
        }
        out.append(contentsOf: "', ".utf8)
        out.append(contentsOf: String(rng.next() % 1_000_000_000).utf8)
        out.append(contentsOf: ");\n".utf8)
    }
    return Array(out.prefix(count))
}

package func sha256(_ bytes: [UInt8]) -> String { try! SHA256.hash(bytes).hex }

/// Removes a tree of any depth (by descriptor, so paths longer than PATH_MAX work).
package func removeTree(_ path: String) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if info.st_mode & S_IFMT != S_IFDIR {
        unlink(path)
        return
    }
    let fd = try check("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
    try removeContents(fd, path)
    close(fd)
    rmdir(path)
}

private func removeContents(_ fd: Int32, _ path: String) throws {
    for name in try directoryEntries(fd, path) {
        var info = stat()
        let isDirectory = withCName(name) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) } == 0 && info.st_mode & S_IFMT == S_IFDIR
        if isDirectory {
            let sub = withCName(name) { openat(fd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if sub >= 0 {
                fchmod(sub, 0o700)
                try removeContents(sub, path + "/" + String(decoding: name, as: UTF8.self))
                close(sub)
            }
            _ = withCName(name) { unlinkat(fd, $0, AT_REMOVEDIR) }
        } else {
            _ = withCName(name) { unlinkat(fd, $0, 0) }
        }
    }
}

@discardableResult
package func withCName<R>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    var c = name.map { CChar(bitPattern: $0) }
    c.append(0)
    return try c.withUnsafeBufferPointer { try body($0.baseAddress!) }
}

/// The names in the folder `fd` (without . and ..), as bytes, sorted.
package func directoryEntries(_ fd: Int32, _ path: String) throws -> [[UInt8]] {
    let copy = try check("dup", path) { dup(fd) }
    guard let dir = fdopendir(copy) else {
        close(copy)
        throw HarnessError.posix("fdopendir", path)
    }
    defer { closedir(dir) }
    rewinddir(dir)
    var names: [[UInt8]] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
            Array(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      count: strlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self))))
        }
        if name == [0x2e] || name == [0x2e, 0x2e] { continue }
        names.append(name)
    }
    return names.sorted { $0.lexicographicallyPrecedes($1) }
}

