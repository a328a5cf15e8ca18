import Foundation
import KhoTestSupport
import Glibc

/// Builds a source tree with every kind of entry and name a backup tool gets wrong: symlinks
/// (also dangling), hard links, empty and sparse files, special modes, foreign owners, mtimes with
/// nanoseconds (also before 1970 and after 2106), Vietnamese names in NFC and NFD, spaces,
/// newlines, a name that is not UTF-8, a path longer than PATH_MAX, and a FIFO.
struct AwkwardTree {
    let root: String
    /// Size of the sparse file; it holds data in only three 4 KiB blocks.
    var sparseSize = 64 << 20

    static let nfc = "Nguyễn Văn Ánh".precomposedStringWithCanonicalMapping
    static let nfd = "Nguyễn Văn Ánh".decomposedStringWithCanonicalMapping
    static let notUTF8: [UInt8] = Array("bad-".utf8) + [0xff, 0xfe, 0xc3, 0x28, 0x80] + Array(".bin".utf8)
    static let ownerUID: uid_t = 1234
    static let ownerGID: gid_t = 5678
    /// Relative path (bytes) of the folder that holds the long path, and its depth.
    static let longLevels = 24

    func p(_ relative: String) -> String { root + "/" + relative }

    func build() throws {
        try makeDirectories(root)
        chmod(root, 0o755)

        // Plain content.
        try writeFile(p("plain.txt"), Array(String(repeating: "Công văn số 12/UBND-VX về việc kết nối dữ liệu.\n", count: 200).utf8))
        try writeFile(p("random.bin"), randomBytes(1 << 20 + 12345))
        try writeFile(p("empty"), [])
        try makeDirectories(p("dir1/dir2/dir3"))
        try writeFile(p("dir1/dir2/dir3/deep.txt"), Array("deep\n".utf8))
        try makeDirectories(p("dir1/empty-folder"))

        // Symlinks: relative, to a folder, absolute, dangling, and one to itself.
        try makeDirectories(p("links"))
        try check("symlink", "to-plain") { symlink("../plain.txt", p("links/to-plain")) }
        try check("symlink", "to-dir") { symlink("../dir1", p("links/to-dir")) }
        try check("symlink", "absolute") { symlink("/etc/hostname", p("links/absolute")) }
        try check("symlink", "dangling") { symlink("does/not/exist", p("links/dangling")) }
        try check("symlink", "loop") { symlink("loop", p("links/loop")) }

        // Hard links: three names for one inode, in different folders.
        try makeDirectories(p("hard"))
        try writeFile(p("hard/a"), Array(String(repeating: "hard linked content\n", count: 1000).utf8))
        try check("link", "hard/b") { link(p("hard/a"), p("hard/b")) }
        try check("link", "dir1/hard-c") { link(p("hard/a"), p("dir1/hard-c")) }

        // A sparse file: three written blocks, holes elsewhere.
        let sparse = try check("open", "sparse.img") { open(p("sparse.img"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        try check("ftruncate", "sparse.img") { ftruncate(sparse, off_t(sparseSize)) }
        for offset in [0, sparseSize / 3, sparseSize - 4096] {
            let block = randomBytes(4096)
            _ = try block.withUnsafeBytes { raw in try check("pwrite", "sparse.img") { pwrite(sparse, raw.baseAddress, 4096, off_t(offset)) } }
        }
        close(sparse)

        // Modes and owners (chown first: it clears the set-ID bits).
        try makeDirectories(p("modes"))
        try writeFile(p("modes/setuid"), Array("#!/bin/sh\necho setuid\n".utf8))
        try check("chown", "setuid") { chown(p("modes/setuid"), AwkwardTree.ownerUID, AwkwardTree.ownerGID) }
        try check("chmod", "setuid") { chmod(p("modes/setuid"), 0o4755) }
        try writeFile(p("modes/setgid"), Array("setgid\n".utf8))
        try check("chmod", "setgid") { chmod(p("modes/setgid"), 0o2711) }
        try writeFile(p("modes/private"), Array("secret\n".utf8))
        try check("chmod", "private") { chmod(p("modes/private"), 0o600) }
        try writeFile(p("modes/nothing"), Array("no permissions at all\n".utf8))
        try check("chmod", "nothing") { chmod(p("modes/nothing"), 0o000) }
        try makeDirectories(p("modes/sticky"))
        try writeFile(p("modes/sticky/inside"), Array("in a sticky folder\n".utf8))
        try check("chmod", "sticky") { chmod(p("modes/sticky"), 0o1777) }
        try makeDirectories(p("modes/closed"))
        try writeFile(p("modes/closed/inside"), Array("in a closed folder\n".utf8))
        try check("chmod", "closed") { chmod(p("modes/closed"), 0o500) }

        try makeDirectories(p("owned/folder"))
        try writeFile(p("owned/folder/file"), Array("owned by 1234:5678\n".utf8))
        try check("chown", "owned/folder/file") { chown(p("owned/folder/file"), AwkwardTree.ownerUID, AwkwardTree.ownerGID) }
        try check("chown", "owned/folder") { chown(p("owned/folder"), AwkwardTree.ownerUID, AwkwardTree.ownerGID) }
        try check("symlink", "owned/link") { symlink("folder/file", p("owned/link")) }
        try check("lchown", "owned/link") { lchown(p("owned/link"), AwkwardTree.ownerUID, AwkwardTree.ownerGID) }
        try writeFile(p("owned/only-group"), Array("group 5678\n".utf8))
        try check("chown", "owned/only-group") { chown(p("owned/only-group"), 0, AwkwardTree.ownerGID) }

        // Names: NFC and NFD of the same Vietnamese name as two files, spaces, newline, glob
        // characters, a leading dash, and bytes that are not UTF-8.
        try makeDirectories(p("names"))
        precondition(Array(AwkwardTree.nfc.utf8) != Array(AwkwardTree.nfd.utf8))
        try writeFile(p("names/") + AwkwardTree.nfc, Array("NFC\n".utf8))
        try writeFile(p("names/") + AwkwardTree.nfd, Array("NFD — a different file\n".utf8))
        try makeDirectories(p("names/Thư mục tiếng Việt"))
        try writeFile(p("names/Thư mục tiếng Việt/Quyết định số 12-QĐ-UBND.pdf"), randomBytes(30000))
        try writeFile(p("names/with space.txt"), Array("spaces\n".utf8))
        try writeFile(p("names/ leading and trailing "), Array("edges\n".utf8))
        try writeFile(p("names/line\nbreak"), Array("newline in the name\n".utf8))
        try writeFile(p("names/tab\there"), Array("tab\n".utf8))
        try writeFile(p("names/*?[glob]"), Array("glob\n".utf8))
        try writeFile(p("names/-dash"), Array("dash\n".utf8))
        try writeFile(p("names/back\\slash"), Array("backslash\n".utf8))
        let badPath = Array(p("names/").utf8) + AwkwardTree.notUTF8
        let bad = try withCName(badPath) { c in try check("open", "non-UTF-8 name") { open(c, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } }
        try writeAll(bad, Array("not UTF-8\n".utf8), "non-UTF-8 name")
        close(bad)
        // A hard link whose other name is the one that is not UTF-8.
        try withCName(badPath) { c in try check("link", "hard link to non-UTF-8 name") { link(c, p("names/hard-to-bad")) } }

        // A path longer than PATH_MAX: created step by step with mkdirat/openat.
        try makeDirectories(p("long"))
        var fd = try check("open", "long") { open(p("long"), O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        var total = p("long").utf8.count
        for level in 0..<AwkwardTree.longLevels {
            let name = Array(String(format: "%02d-", level).utf8) + Array(repeating: UInt8(ascii: "d"), count: 200)
            total += 1 + name.count
            try withCName(name) { c in
                try check("mkdirat", "long level \(level)") { mkdirat(fd, c, 0o755) }
                let next = try check("openat", "long level \(level)") { openat(fd, c, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
                close(fd)
                fd = next
            }
        }
        let leaf = try check("openat", "long leaf") { openat(fd, "leaf.txt", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640) }
        try writeAll(leaf, Array("at the end of a very long path\n".utf8), "long leaf")
        close(leaf)
        try check("symlinkat", "long link") { symlinkat("leaf.txt", fd, "leaf-link") }
        // Hard links down there too: restoring them must not go through a path longer than PATH_MAX.
        try check("linkat", "long hard link") { linkat(fd, "leaf.txt", fd, "leaf-hard", 0) }
        close(fd)
        precondition(total + 9 > 4096, "the long path must exceed PATH_MAX")

        // A FIFO (never opened by the backup), a character device (like /dev/null) and a socket.
        try check("mkfifo", "fifo") { mkfifo(p("fifo"), 0o640) }
        // Device 1,3 as glibc's makedev encodes it.
        try check("mknod", "null-device") { mknod(p("null-device"), S_IFCHR | 0o620, dev_t(1 << 8 | 3)) }
        let socketFD = try check("socket", "socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let socketPath = Array(p("socket").utf8)
        precondition(socketPath.count < MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in socketPath.enumerated() { raw[i] = byte }
        }
        _ = try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { a in
                try check("bind", "socket") { bind(socketFD, a, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        close(socketFD)

        // Times last, children before their folder: nanoseconds everywhere, and a few extremes.
        var counter: Int64 = 0
        let rootFD = try check("open", root) { open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(rootFD) }
        try setTimes(in: rootFD, shown: root, counter: &counter)
        var special: [(String, Int64, Int)] = [
            ("plain.txt", -1_234_567_890, 987_654_321), // before 1970
            ("random.bin", 4_399_999_999, 1), // after 2106 (does not fit 32 bits)
            ("empty", 1_700_000_000, 0), // whole second
        ]
        special.append(("dir1/dir2/dir3/deep.txt", 0, 999_999_999))
        for (path, seconds, nanoseconds) in special {
            var times = [timespec(tv_sec: Int(seconds), tv_nsec: nanoseconds), timespec(tv_sec: Int(seconds), tv_nsec: nanoseconds)]
            try check("utimensat", path) { utimensat(AT_FDCWD, p(path), &times, AT_SYMLINK_NOFOLLOW) }
        }
        var rootTimes = [timespec(tv_sec: 1_650_000_000, tv_nsec: 424_242_424), timespec(tv_sec: 1_650_000_000, tv_nsec: 424_242_424)]
        try check("futimens", root) { futimens(rootFD, &rootTimes) }
    }

    /// Gives every entry below `fd` its own mtime with nanoseconds, folders after their content.
    private func setTimes(in fd: Int32, shown: String, counter: inout Int64) throws {
        for name in try directoryEntries(fd, shown) {
            var info = stat()
            try withCName(name) { c in try check("fstatat", shown) { fstatat(fd, c, &info, AT_SYMLINK_NOFOLLOW) } }
            if info.st_mode & S_IFMT == S_IFDIR {
                let sub = try withCName(name) { c in try check("openat", shown) { openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) } }
                try setTimes(in: sub, shown: shown + "/…", counter: &counter)
                close(sub)
            }
            counter += 1
            let seconds = 1_500_000_000 + counter * 86_413
            let nanoseconds = Int((123_456_789 + counter * 7_919_113) % 1_000_000_000)
            var times = [timespec(tv_sec: Int(seconds), tv_nsec: nanoseconds), timespec(tv_sec: Int(seconds), tv_nsec: nanoseconds)]
            try withCName(name) { c in try check("utimensat", shown) { utimensat(fd, c, &times, AT_SYMLINK_NOFOLLOW) } }
        }
    }
}
