import Foundation
import Glibc
import KhoSupport

// Linux calls and constants that Swift's Glibc module does not export (macros or GNU-only headers).
private let socketCloexec = Int32(0o2000000)  // SOCK_CLOEXEC
private let optionPeerCredentials = Int32(17)  // SO_PEERCRED
@_silgen_name("accept4") private func systemAccept4(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?, _ flags: Int32) -> Int32

/// The credentials the kernel recorded for the other end of a Unix socket when it connected
/// (`struct ucred`): they cannot be forged by what the peer sends.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
}


/// Unix sockets of type `SOCK_SEQPACKET` for the WAL agent: every request and answer is one
/// message, so a descriptor passed with `SCM_RIGHTS` belongs to exactly one request.
enum WALSocket {
    /// `sockaddr_un` for `path`; paths longer than `sun_path` are refused (the kernel would cut them).
    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw KhoError(.usage, "The socket path \(path) is longer than the \(capacity - 1) bytes a Unix socket's name may have: pass a shorter --socket.")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    static func makeSocket(_ path: String) throws -> Int32 {
        try Syscall.call("socket", path) { socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | socketCloexec, 0) }
    }

    /// A listening socket bound at `path` (which must not exist).
    static func listen(at path: String, backlog: Int32 = 64) throws -> Int32 {
        var address = try address(path)
        let fd = try makeSocket(path)
        do {
            try Syscall.call("bind", path) {
                withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            }
            try Syscall.call("listen", path) { Glibc.listen(fd, backlog) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// A socket connected to `path`; sends and receives give up after `timeout` seconds.
    /// Returns the errno instead of throwing when nobody listens, so callers can say so plainly.
    enum Connection {
        case connected(Int32)
        /// Nobody listens there (or may not be reached): the errno of connect.
        case unreachable(errno: Int32)
    }

    static func connect(to path: String, timeout: TimeInterval) throws -> Connection {
        var address = try address(path)
        let fd = try makeSocket(path)
        setTimeouts(fd, timeout)
        let (_, code) = Syscall.attempt {
            withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        }
        if code != 0 {
            close(fd)
            return .unreachable(errno: code)
        }
        return .connected(fd)
    }

    /// Sets `SO_SNDTIMEO` and `SO_RCVTIMEO` (connect on a Unix socket honours the send timeout).
    static func setTimeouts(_ fd: Int32, _ seconds: TimeInterval) {
        let clamped = max(0.001, min(seconds, 86_400))
        var value = timeval(tv_sec: Int(clamped), tv_usec: Int((clamped - clamped.rounded(.down)) * 1_000_000))
        // Best effort: without a timeout a call can only wait longer, and the caller's own
        // deadline (poll) still bounds the wait for an answer.
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Accepts one connection, waiting at most `timeout` seconds; nil when none came.
    static func accept(_ listener: Int32, timeout: TimeInterval) throws -> Int32? {
        guard try waitReadable(listener, timeout: timeout) else { return nil }
        let (fd, code) = Syscall.attempt { systemAccept4(listener, nil, nil, socketCloexec) }
        if code == 0 { return fd }
        // The client gave up between poll and accept, or descriptors ran out for a moment: the
        // next round tries again.
        if [EAGAIN, EWOULDBLOCK, ECONNABORTED, EPROTO, EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(code) { return nil }
        throw KhoError.posix("accept", "the WAL agent's socket", errno: code)
    }

    /// True when `fd` has something to read (or was closed) within `timeout` seconds.
    static func waitReadable(_ fd: Int32, timeout: TimeInterval) throws -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(max(0, min(timeout, 3600)) * 1000)
        let ready = try Syscall.call("poll", "the WAL agent's socket") { poll(&entry, 1, milliseconds) }
        return ready > 0
    }

    static func peerCredentials(_ fd: Int32) throws -> PeerCredentials {
        var raw = (Int32(0), UInt32(0), UInt32(0))
        var length = socklen_t(MemoryLayout.size(ofValue: raw))
        try Syscall.call("getsockopt(SO_PEERCRED)", "the WAL agent's socket") { getsockopt(fd, SOL_SOCKET, optionPeerCredentials, &raw, &length) }
        return PeerCredentials(pid: raw.0, uid: raw.1, gid: raw.2)
    }

    /// The size of a control message holding `count` descriptors, aligned as the kernel wants
    /// (`CMSG_SPACE`, `CMSG_LEN`).
    /// Sends `bytes` as one message, with `descriptor` attached when given.
    static func send(_ fd: Int32, _ bytes: [UInt8], descriptor: Int32? = nil) throws {
        try DescriptorPassing.send(fd, bytes, descriptor: descriptor, what: "the WAL agent's socket")
    }

    /// Receives one message of at most `limit` bytes and up to `maxDescriptors` descriptors
    /// (marked close-on-exec). An empty message with no descriptors means the peer closed.
    static func receive(_ fd: Int32, limit: Int, maxDescriptors: Int = 1) throws -> SocketMessage {
        try DescriptorPassing.receive(fd, limit: limit, maxDescriptors: maxDescriptors, what: "the WAL agent's socket")
    }
}
