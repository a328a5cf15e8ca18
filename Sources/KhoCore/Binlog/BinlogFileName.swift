import Foundation
import KhoSupport

/// A MariaDB binary log file's name as the server gives it (`SHOW BINARY LOGS`, a rotate event):
/// `<basename>.<number>`. The name comes from the server, so it is confined before it becomes
/// part of a repository path or an argument: only `[A-Za-z0-9._-]`, no leading dot, no `..`, at most
/// 200 bytes, no leading dot or dash, ending in a dot and 1 to 10 digits.
public struct BinlogFileName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let description: String
    public let basename: String
    public let number: UInt64

    public init(_ text: String) throws {
        func refuse(_ why: String) -> KhoError {
            KhoError(.integrity, "\"\(text.prefix(80))\" is not a binary log file name kho accepts (\(why)): names are <basename>.<number> in letters, digits, '.', '_' and '-'; check what the server reported.")
        }
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 200 else { throw refuse("empty or longer than 200 bytes") }
        guard bytes.allSatisfy({ BinlogFileName.allowed($0) }) else { throw refuse("a character outside [A-Za-z0-9._-]") }
        // A leading '-' would read as an option where the name is an argument.
        guard bytes[0] != UInt8(ascii: "."), bytes[0] != UInt8(ascii: "-"), !text.contains("..") else { throw refuse("a leading dot or dash, or '..'") }
        guard let dot = bytes.lastIndex(of: UInt8(ascii: ".")), dot > 0 else { throw refuse("no .<number> at its end") }
        let digits = bytes[(dot + 1)...]
        guard (1...10).contains(digits.count), digits.allSatisfy({ (48...57).contains($0) }), let number = UInt64(String(decoding: digits, as: UTF8.self)) else {
            throw refuse("no .<number> at its end")
        }
        description = text
        basename = String(decoding: bytes[..<dot], as: UTF8.self)
        self.number = number
    }

    static func allowed(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte)
            || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// The file the server writes after this one (its number plus one, as many digits).
    public func isFollowed(by other: BinlogFileName) -> Bool {
        other.basename == basename && other.number == number + 1
    }

    public static func < (a: BinlogFileName, b: BinlogFileName) -> Bool {
        a.basename != b.basename ? a.basename < b.basename : a.number < b.number
    }
}

/// The folder of a source's binary log archive, `binlog/<archive>/`: the policy source's name
/// when it is already a safe folder name, otherwise `s-` and 16 hex digits of its SHA-256.
public struct BinlogArchiveID: Hashable, Sendable, CustomStringConvertible {
    public let description: String

    /// The folder name as listed under `binlog/`, when it is one kho could have made.
    public init?(folder: String) {
        let bytes = Array(folder.utf8)
        guard (1...100).contains(bytes.count), bytes.allSatisfy({ BinlogFileName.allowed($0) }), bytes[0] != UInt8(ascii: "."), !folder.contains("..") else {
            return nil
        }
        description = folder
    }

    public init(source: String) throws {
        let bytes = Array(source.utf8)
        if (1...100).contains(bytes.count), bytes.allSatisfy({ BinlogFileName.allowed($0) }), bytes[0] != UInt8(ascii: "."), source != "-",
           !source.contains("..") {
            description = source
        } else {
            description = "s-" + String(try SHA256.hash(bytes).hex.prefix(16))
        }
    }
}
