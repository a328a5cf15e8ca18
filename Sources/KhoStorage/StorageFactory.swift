import Foundation
import KhoCore
import KhoSupport

/// The one place that turns a repository address into a storage.
public enum StorageFactory {
    /// `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]` gives an `S3Storage` configured from the
    /// environment (see `S3Configuration.fromEnvironment`); anything else is a folder.
    ///
    /// With `checkAccess` (the default), an S3 storage is asked for one listing first, so that a
    /// server that cannot be reached, refused credentials or a missing bucket are reported as such
    /// and not as "not a repository" by whoever reads the config next.
    public static func make(location: String, checkAccess: Bool = true,
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> any Storage {
        if location.hasPrefix("s3:") {
            let storage = try S3Storage(location: location, configuration: try S3Configuration.fromEnvironment(environment))
            if checkAccess { try storage.checkAccess() }
            return storage
        }
        return LocalStorage(path: location)
    }
}
