import Foundation
import Glibc
import KhoSupport

// Linux calls and constants that Swift's Glibc module does not export (macros or GNU-only headers).
private let socketCloexec = Int32(0o2000000)  // SOCK_CLOEXEC
private let messageCloexecDescriptors = Int32(0x4000_0000)  // MSG_CMSG_CLOEXEC
private let messageControlTruncated = Int32(0x08)  // MSG_CTRUNC
private let messageTruncated = Int32(0x20)  // MSG_TRUNC
private let messageNoSignal = Int32(0x4000)  // MSG_NOSIGNAL
private let optionPeerCredentials = Int32(17)  // SO_PEERCRED
private let rightsType = Int32(1)  // SCM_RIGHTS
@_silgen_name("accept4") private func systemAccept4(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?, _ flags: Int32) -> Int32

/// The credentials the kernel recorded for the other end of a Unix socket when it connected
/// (`struct ucred`): they cannot be forged by what the peer sends.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
}

/// One message received on a sequenced-packet socket, with the descriptors that came with it.
struct SocketMessage {
    var bytes: [UInt8]
    var descriptors: [Int32]
    /// The message or its control data did not fit: it is not what the protocol sends.
    var truncated: Bool
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
    private static let headerSize = (MemoryLayout<cmsghdr>.size + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1)
    private static func controlSpace(_ count: Int) -> Int {
        headerSize + ((count * 4 + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1))
    }

    /// Sends `bytes` as one message, with `descriptor` attached when given.
    static func send(_ fd: Int32, _ bytes: [UInt8], descriptor: Int32? = nil) throws {
        var payload = bytes
        var control = [UInt8](repeating: 0, count: descriptor == nil ? 0 : controlSpace(1))
        let sent = payload.withUnsafeMutableBytes { data -> (Int, Int32) in
            control.withUnsafeMutableBytes { controlBytes -> (Int, Int32) in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer -> (Int, Int32) in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    if let descriptor {
                        let header = controlBytes.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                        header.pointee.cmsg_len = headerSize + 4
                        header.pointee.cmsg_level = SOL_SOCKET
                        header.pointee.cmsg_type = rightsType
                        controlBytes.storeBytes(of: descriptor, toByteOffset: headerSize, as: Int32.self)
                        message.msg_control = controlBytes.baseAddress
                        message.msg_controllen = controlBytes.count
                    }
                    return Syscall.attempt { sendmsg(fd, &message, messageNoSignal) }
                }
            }
        }
        if sent.1 != 0 { throw KhoError.posix("sendmsg", "the WAL agent's socket", errno: sent.1) }
        guard sent.0 == bytes.count else {
            throw KhoError(.failure, "The WAL agent's socket took \(sent.0) of \(bytes.count) bytes of a message: check that both ends are the same kho version.")
        }
    }

    /// Receives one message of at most `limit` bytes and up to `maxDescriptors` descriptors
    /// (marked close-on-exec). An empty message with no descriptors means the peer closed.
    static func receive(_ fd: Int32, limit: Int, maxDescriptors: Int = 1) throws -> SocketMessage {
        var payload = [UInt8](repeating: 0, count: limit + 1)
        var control = [UInt8](repeating: 0, count: controlSpace(maxDescriptors))
        var flags: Int32 = 0
        var controlLength = 0
        let received = payload.withUnsafeMutableBytes { data -> (Int, Int32) in
            control.withUnsafeMutableBytes { controlBytes -> (Int, Int32) in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer -> (Int, Int32) in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    let result = Syscall.attempt { recvmsg(fd, &message, messageCloexecDescriptors) }
                    flags = message.msg_flags
                    controlLength = min(controlBytes.count, Int(message.msg_controllen))
                    return result
                }
            }
        }
        if received.1 != 0 { throw KhoError.posix("recvmsg", "the WAL agent's socket", errno: received.1) }
        control.removeLast(control.count - controlLength)
        var descriptors: [Int32] = []
        // Walk the control messages: only SCM_RIGHTS carries descriptors; every one received is
        // ours to close, whatever else is wrong with the message.
        var offset = 0
        while offset + headerSize <= control.count {
            let (length, level, type) = control.withUnsafeBytes { raw -> (Int, Int32, Int32) in
                let header = raw.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                return (Int(header.cmsg_len), header.cmsg_level, header.cmsg_type)
            }
            guard length >= headerSize, offset + length <= control.count else { break }
            if level == SOL_SOCKET && type == rightsType {
                var at = offset + headerSize
                while at + 4 <= offset + length {
                    descriptors.append(control.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: Int32.self) })
                    at += 4
                }
            }
            offset += (length + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1)
        }
        let truncated = received.0 > limit || flags & (messageTruncated | messageControlTruncated) != 0
        return SocketMessage(bytes: Array(payload.prefix(min(received.0, limit))), descriptors: descriptors, truncated: truncated)
    }
}
