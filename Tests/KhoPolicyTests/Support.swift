import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoPolicy
import Testing

// Shared helpers of the KhoPolicy unit tests: a temporary folder of policy files, the package root
// (for the example policies), environment variables set for one test.
//
// Tests that set environment variables (setenv) run one at a time: the suite that holds them is
// `.serialized`, and nothing else in this target reads the variables they set.

/// Every suite of this target is nested here, so that they run one at a time: some tests set
/// environment variables, which is not safe while another thread reads the environment.
@Suite("KhoPolicy", .serialized)
struct KhoPolicyUnitTests {}

enum TestPaths {
    /// The package root, from this file's path (Tests/KhoPolicyTests/Support.swift).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
}

/// A temporary folder, removed when the value goes away.
final class TemporaryFolder: @unchecked Sendable {
    let path: String

    init(_ label: String = "policy") throws {
        var template = Array("/tmp/kho-unit-\(label)-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw TestFailure("mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` inside the folder and returns the full path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let full = path + "/" + name
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: full, contents: Data(text.utf8)) else {
            throw TestFailure("cannot write \(full)")
        }
        return full
    }

    func remove(_ name: String) { try? FileManager.default.removeItem(atPath: path + "/" + name) }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }
}

/// Sets environment variables for the duration of `body`, then restores them.
func withEnvironment<T>(_ values: [String: String?], _ body: () throws -> T) rethrows -> T {
    var saved: [String: String?] = [:]
    for (key, value) in values {
        saved[key] = getenv(key).map { String(cString: $0) }
        if let value { setenv(key, value, 1) } else { unsetenv(key) }
    }
    defer {
        for (key, value) in saved {
            if let value { setenv(key, value, 1) } else { unsetenv(key) }
        }
    }
    return try body()
}
