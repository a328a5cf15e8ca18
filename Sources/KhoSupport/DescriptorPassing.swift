import Glibc

// Linux constants that Swift's Glibc module does not export (macros or GNU-only headers).
private let messageCloexecDescriptors = Int32(0x4000_0000)  // MSG_CMSG_CLOEXEC
private let messageControlTruncated = Int32(0x08)  // MSG_CTRUNC
private let messageTruncated = Int32(0x20)  // MSG_TRUNC
private let messageNoSignal = Int32(0x4000)  // MSG_NOSIGNAL
private let rightsType = Int32(1)  // SCM_RIGHTS

/// One message received on a Unix socket, with the descriptors that came with it.
public struct SocketMessage {
    public var bytes: [UInt8]
    public var descriptors: [Int32]
    /// The message or its control data did not fit: it is not what the protocol sends.
    public var truncated: Bool
}

/// Sending an open descriptor to another process over a Unix socket (`SCM_RIGHTS`): how kho
/// hands work across a privilege boundary without naming a path the other side would open with
/// its own rights (the WAL agent reads the archiver's descriptor; the WAL server of a restore
/// writes into the file its client created).
public enum DescriptorPassing {
    static let headerSize = (MemoryLayout<cmsghdr>.size + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1)
    private static func controlSpace(_ count: Int) -> Int {
        headerSize + ((count * 4 + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1))
    }

    /// A message header over `payload` (one vector) and `control`, for sendmsg or recvmsg.
    private static func withMessage<R>(_ payload: inout [UInt8], _ control: inout [UInt8],
                                       _ body: (inout msghdr, UnsafeMutableRawBufferPointer) -> R) -> R {
        payload.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    return body(&message, controlBytes)
                }
            }
        }
    }

    /// Sends `bytes` as one message, with `descriptor` attached when given.
    public static func send(_ fd: Int32, _ bytes: [UInt8], descriptor: Int32? = nil, what: String) throws {
        var payload = bytes
        var control = [UInt8](repeating: 0, count: descriptor == nil ? 0 : controlSpace(1))
        let sent = withMessage(&payload, &control) { message, controlBytes -> (Int, Int32) in
            if let descriptor {
                let header = controlBytes.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                header.pointee.cmsg_len = headerSize + 4
                header.pointee.cmsg_level = SOL_SOCKET
                header.pointee.cmsg_type = rightsType
                controlBytes.storeBytes(of: descriptor, toByteOffset: headerSize, as: Int32.self)
            } else {
                message.msg_control = nil
                message.msg_controllen = 0
            }
            return Syscall.attempt { sendmsg(fd, &message, messageNoSignal) }
        }
        if sent.1 != 0 { throw KhoError.posix("sendmsg", what, errno: sent.1) }
        guard sent.0 == bytes.count else {
            throw KhoError(.failure, "Only \(sent.0) of \(bytes.count) bytes of a message went through \(what): check that both ends are the same kho version.")
        }
    }

    /// Receives one message of at most `limit` bytes and up to `maxDescriptors` descriptors
    /// (marked close-on-exec). An empty message with no descriptors means the peer closed.
    public static func receive(_ fd: Int32, limit: Int, maxDescriptors: Int = 1, what: String) throws -> SocketMessage {
        var payload = [UInt8](repeating: 0, count: limit + 1)
        var control = [UInt8](repeating: 0, count: controlSpace(maxDescriptors))
        var flags: Int32 = 0
        var controlLength = 0
        let received = withMessage(&payload, &control) { message, controlBytes -> (Int, Int32) in
            let result = Syscall.attempt { recvmsg(fd, &message, messageCloexecDescriptors) }
            flags = message.msg_flags
            controlLength = min(controlBytes.count, Int(message.msg_controllen))
            return result
        }
        if received.1 != 0 { throw KhoError.posix("recvmsg", what, errno: received.1) }
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
