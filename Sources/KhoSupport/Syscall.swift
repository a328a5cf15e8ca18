import Foundation

/// System calls go through here: EINTR is retried, any other failure becomes a `KhoError` that names
/// the call and what it was made on.
public enum Syscall {
    @discardableResult
    public static func call<T: BinaryInteger>(_ name: String, _ object: @autoclosure () -> String, _ body: () -> T) throws -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            throw KhoError.posix(name, object(), errno: code)
        }
    }

    /// Like `call`, but returns the errno instead of throwing, for callers that handle some errors.
    public static func attempt<T: BinaryInteger>(_ body: () -> T) -> (T, Int32) {
        while true {
            let result = body()
            if result >= 0 { return (result, 0) }
            let code = errno
            if code == EINTR { continue }
            return (result, code)
        }
    }

    /// Writes all of `buffer` to `fd`.
    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, _ object: @autoclosure () -> String) throws {
        var done = 0
        while done < buffer.count {
            let n = try call("write", object()) { write(fd, buffer.baseAddress! + done, buffer.count - done) }
            done += n
        }
    }

    /// Writes all of `buffer` at `offset`.
    public static func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, offset: Int, _ object: @autoclosure () -> String) throws {
        var done = 0
        while done < buffer.count {
            let n = try call("pwrite", object()) { pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done)) }
            done += n
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`, fewer only at end of file.
    public static func preadFull(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int, _ object: @autoclosure () -> String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try call("pread", object()) { pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done)) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads `fd` from its current position to the end, refusing more than `limit` bytes (a file
    /// that grows past what its kind can be is not that kind of file).
    public static func readAll(_ fd: Int32, limit: Int, _ object: @autoclosure () -> String) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try chunk.withUnsafeMutableBytes { buffer in try call("read", object()) { read(fd, buffer.baseAddress!, buffer.count) } }
            if n == 0 { return result }
            guard result.count + n <= limit else {
                throw KhoError(.source, "\(object()) is larger than the \(limit) bytes expected of it: check what wrote it.")
            }
            result.append(contentsOf: chunk[0..<n])
        }
    }

    /// The whole file at `path` (at most `limit` bytes), opened without following a final symlink.
    public static func readFile(_ path: String, limit: Int) throws -> [UInt8] {
        let fd = try call("open", path) { open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        defer { close(fd) }
        var info = stat()
        try call("fstat", path) { fstat(fd, &info) }
        // A regular file is read into one buffer of its size (a 16 MiB WAL segment is not grown
        // chunk by chunk); whatever it grew by meanwhile, and any other kind of file, is read on.
        guard info.st_mode & S_IFMT == S_IFREG, info.st_size > 0, info.st_size <= limit else {
            return try readAll(fd, limit: limit, path)
        }
        let expected = Int(info.st_size)
        var filled = 0
        var result = try [UInt8](unsafeUninitializedCapacity: expected) { buffer, count in
            while filled < expected {
                let n = try call("read", path) { read(fd, buffer.baseAddress! + filled, expected - filled) }
                if n == 0 { break }
                filled += n
            }
            count = filled
        }
        guard filled == expected else { return result }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try chunk.withUnsafeMutableBytes { buffer in try call("read", path) { read(fd, buffer.baseAddress!, buffer.count) } }
            if n == 0 { return result }
            guard result.count + n <= limit else {
                throw KhoError(.source, "\(path) is larger than the \(limit) bytes expected of it: check what wrote it.")
            }
            result.append(contentsOf: chunk[0..<n])
        }
    }
}
