import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoPolicy
import KhoTestSupport
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
