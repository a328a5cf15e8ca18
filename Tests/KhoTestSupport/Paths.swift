import Foundation

package enum TestPaths {
    /// The package root, from this file's path (Tests/KhoTestSupport/Paths.swift).
    package static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
}
