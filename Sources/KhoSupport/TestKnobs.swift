import Foundation

/// Settings that only kho's own test suite uses (`KHO_TEST_NOW`, `KHO_TEST_SCRYPT_N`,
/// `KHO_TEST_PRUNE_GRACE`, …). Several would weaken or steer a production run (a cheap key, a
/// clock that makes retention forget, a prune that removes a running backup's packs), so a release
/// build reads none of them and the command line refuses to start while one is set.
public enum TestKnobs {
    public static let prefix = "KHO_TEST_"

    /// The variable's value in a debug build; nil in a release build, whatever is set.
    public static func value(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        #if DEBUG
        return environment[name]
        #else
        return nil
        #endif
    }

    /// In a release build, the error for the first test-only variable set; nil in a debug build.
    public static func refusal(environment: [String: String] = ProcessInfo.processInfo.environment) -> KhoError? {
        #if DEBUG
        return nil
        #else
        guard let name = environment.keys.filter({ $0.hasPrefix(prefix) }).sorted().first else { return nil }
        return KhoError(.usage, "\(name) is a setting for kho's own tests, which this release build does not honour: unset it (every KHO_TEST_ variable) and run the command again.")
        #endif
    }
}
