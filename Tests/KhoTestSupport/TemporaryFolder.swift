import Foundation
import Glibc

/// A temporary folder, removed when the value goes away.
package final class TemporaryFolder: @unchecked Sendable {
    package let path: String

    package init(_ label: String = "policy") throws {
        path = try ServerSupport.makeTemporaryFolder("unit-\(label)")
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` inside the folder and returns the full path.
    @discardableResult
    package func write(_ name: String, _ text: String) throws -> String {
        let full = path + "/" + name
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: full, contents: Data(text.utf8)) else {
            throw TestFailure("cannot write \(full)")
        }
        return full
    }

    package func remove(_ name: String) { try? FileManager.default.removeItem(atPath: path + "/" + name) }
}

package struct TestFailure: Error, CustomStringConvertible {
    package var description: String
    package init(_ text: String) { description = text }
}
