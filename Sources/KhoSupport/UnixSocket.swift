import Foundation
import Glibc

/// A local stream socket (AF_UNIX): how kho's own processes talk across a privilege boundary
/// (PostgreSQL's restore_command, run as the cluster's user, asking the `kho restore` process
/// that holds the key for a WAL file). Every call goes through `Syscall`; EINTR is retried.
public final class UnixSocket: @unchecked Sendable {
    public let descriptor: Int32
    private var closed = false
    private let lock = NSLock()

    private init(descriptor: Int32) { self.descriptor = descriptor }
    deinit { close() }

    public func close() {
        lock.withLock {
            if !closed { _ = Glibc.close(descriptor); closed = true }
        }
    }

    /// `sun_path` holds 108 bytes with its NUL: longer paths cannot be bound or reached.
    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw KhoError(.usage, "The socket path \(path) is longer than the \(capacity - 1) bytes a Unix socket's name may have: choose a shorter state folder.")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// Listens at `path` (which must not exist), with the socket file's mode set to `mode`.
    public static func listen(at path: String, mode: mode_t, backlog: Int32 = 16) throws -> UnixSocket {
        let fd = try Syscall.call("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let opened = UnixSocket(descriptor: fd)
        var address = try address(path)
        try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                _ = try Syscall.call("bind", path) { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        try Syscall.call("chmod", path) { chmod(path, mode) }
        try Syscall.call("listen", path) { Glibc.listen(fd, backlog) }
        return opened
    }

    public static func connect(to path: String) throws -> UnixSocket {
        let fd = try Syscall.call("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let opened = UnixSocket(descriptor: fd)
        var address = try address(path)
        try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                _ = try Syscall.call("connect", path) { Glibc.connect(fd, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        return opened
    }

    /// The next connection; nil once the listening socket was shut down (`shutdownListening`).
    public func accept() throws -> UnixSocket? {
        while true {
            let fd = Glibc.accept(descriptor, nil, nil)
            if fd >= 0 {
                // kho starts children (servers, dump tools) from other threads: the connection
                // must not leak into them.
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return UnixSocket(descriptor: fd)
            }
            switch errno {
            case EINTR, ECONNABORTED: continue
            case EINVAL, EBADF: return nil
            default: throw KhoError.posix("accept", "a local socket", errno: errno)
            }
        }
    }

    /// Wakes a thread blocked in `accept` (which then returns nil).
    public func shutdownListening() { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }

    /// The user ID of the process at the other end (SO_PEERCRED), as the kernel saw it connect.
    public func peerUserID() throws -> uid_t {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }, which Glibc's module does not export.
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        try Syscall.call("getsockopt(SO_PEERCRED)", "a local socket") { getsockopt(descriptor, SOL_SOCKET, 17 /* SO_PEERCRED */, &credentials, &length) }
        return credentials.uid
    }

    /// Sets how long a read or write may block before it fails (a stuck peer must not hold a
    /// thread for ever).
    public func setTimeout(seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = try Syscall.call("send", "a local socket") { send(descriptor, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL)) }
                done += n
            }
        }
    }

    /// Reads one line (without its newline) of at most `limit` bytes; nil at end of stream.
    public func readLine(limit: Int) throws -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = try Syscall.call("recv", "a local socket") { recv(descriptor, &byte, 1, 0) }
            if n == 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
            guard line.count <= limit else {
                throw KhoError(.failure, "A local socket's peer sent a line longer than \(limit) bytes: it is not a kho process speaking kho's protocol.")
            }
        }
    }

    /// Reads exactly `count` bytes.
    public func read(count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = try result.withUnsafeMutableBytes { raw in
                try Syscall.call("recv", "a local socket") { recv(descriptor, raw.baseAddress! + done, count - done, 0) }
            }
            guard n > 0 else {
                throw KhoError(.failure, "A local socket's peer closed the connection after \(done) of \(count) bytes: the kho process serving it stopped; see its messages.")
            }
            done += n
        }
        return result
    }
}
