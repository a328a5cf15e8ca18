import Foundation

/// The one error type kho's libraries throw. `kind` decides the exit code, `message` is one sentence
/// that says what happened and what to do, `retryable` says whether running the same thing again may
/// succeed without anyone changing anything.
public struct KhoError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// The user asked for something that cannot be done as asked (bad flag value, unknown snapshot).
        case usage
        /// Something went wrong that is not one of the kinds below.
        case failure
        /// The path given is not a kho repository, or the repository is of a newer format.
        case notARepository
        /// No key of the repository opens with the password given.
        case wrongPassword
        /// Another process holds a lock that conflicts with the one asked for.
        case locked
        /// Stored data does not authenticate, is missing or does not hash to its name.
        case integrity
        /// The filesystem or storage holding the repository has no room left.
        case storageFull
        /// A source (file, stream, command) could not be read.
        case source
        /// A dump came out much smaller than the previous good dump of its source (below its
        /// `min-size-ratio`) and was not kept: reports count these as shrink alerts.
        case sourceShrank
        /// The storage could not be reached or answered with an error.
        case storage
        /// The operation was interrupted by a signal.
        case interrupted
    }

    public var kind: Kind
    public var message: String
    public var retryable: Bool

    public init(_ kind: Kind, _ message: String, retryable: Bool = false) {
        self.kind = kind
        self.message = message
        self.retryable = retryable
    }

    public var description: String { message }
}

extension KhoError {
    /// An error from a system call, named after the call and the object it was made on.
    public static func posix(_ call: String, _ object: String, errno code: Int32) -> KhoError {
        let reason = String(cString: strerror(code))
        switch code {
        case ENOSPC, EDQUOT:
            return KhoError(.storageFull,
                            "No space left while writing \(object) (\(call)): free space on that filesystem or move the repository, then run the command again.")
        case EINTR, EAGAIN:
            return KhoError(.failure, "\(call) on \(object) was interrupted: \(reason).", retryable: true)
        default:
            return KhoError(.failure, "\(call) failed on \(object): \(reason).")
        }
    }
}
