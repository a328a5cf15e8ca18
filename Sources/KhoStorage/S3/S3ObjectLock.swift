import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KhoCore
import KhoSupport

/// S3 Object Lock: files are written with a retain-until date, which the server enforces against
/// every key, including one stolen from the backup host. Lock files are written without one: they
/// must be removable when a command ends.
extension S3Storage: RetainingStorage {
    public func checkRetentionSupported() throws {
        let what = "read the object lock setting of bucket \(address.bucket)"
        let response = try client.send("GET", key: nil, query: [("object-lock", "")], what: what)
        let code = S3ErrorBody(response.body)?.code
        switch response.status {
        case 200:
            guard ObjectLockConfiguration(response.body)?.enabled == true else { throw lockNotEnabled() }
        case 404 where code == "NoSuchBucket":
            throw client.bucketMissing()
        case 400, 404:
            guard code == "ObjectLockConfigurationNotFoundError" || code == "InvalidRequest" else { throw client.failure(response, what: what) }
            throw lockNotEnabled()
        default:
            throw client.failure(response, what: what)
        }
    }

    private func lockNotEnabled() -> KhoError {
        KhoError(.usage, "Bucket \(address.bucket) on \(address.endpoint) has no object lock, and it can only be turned on when a bucket is created: create a bucket with object lock enabled (e.g. `aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket`) for this repository, or leave out --object-lock-days.")
    }

    public func setRetention(_ settings: ObjectLockSettings?) {
        retention.withLock { $0 = settings }
    }

    /// The headers that lock a file being written, with the Content-MD5 S3 asks for with them.
    func lockHeaders(for handle: Handle, body: [UInt8]) throws -> [String: String] {
        guard let settings = retention.current, handle.kind != .lock else { return [:] }
        return [
            "x-amz-object-lock-mode": settings.mode.rawValue.uppercased(),
            "x-amz-object-lock-retain-until-date": S3Time.format(Date().addingTimeInterval(Double(settings.days) * 86400)),
            "Content-MD5": Data(try MD5.digest(body)).base64EncodedString(),
        ]
    }

    public func retainedUntil(_ handle: Handle) throws -> Date? {
        guard let response = try head(handle) else { return nil }
        if response.headers["x-amz-object-lock-legal-hold"]?.uppercased() == "ON" { return .distantFuture }
        return response.headers["x-amz-object-lock-retain-until-date"].flatMap(S3Time.parse)
    }

    /// The version to remove (empty in a bucket without versions), or nil when the file is gone.
    func removableVersion(_ handle: Handle) throws -> String? {
        guard let response = try head(handle) else { return nil }
        return response.headers["x-amz-version-id"] ?? ""
    }

    public func retain(_ handle: Handle, until date: Date) throws {
        let mode = (retention.current?.mode ?? .compliance).rawValue.uppercased()
        let body = Array("""
            <Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>\(mode)</Mode><RetainUntilDate>\(S3Time.format(date))</RetainUntilDate></Retention>
            """.utf8)
        let what = "extend the object lock of \(handle.path)"
        let response = try client.send("PUT", key: address.key(handle), query: [("retention", "")],
                                       headers: ["Content-MD5": Data(try MD5.digest(body)).base64EncodedString()], body: body, what: what)
        switch response.status {
        case 200...299: return
        case 404: throw client.notFound(response, handle: handle)
        default: throw client.failure(response, what: what)
        }
    }

    private func head(_ handle: Handle) throws -> S3Response? {
        let what = "look up \(handle.path)"
        let response = try client.send("HEAD", key: address.key(handle), what: what)
        switch response.status {
        case 200...299: return response
        case 404:
            try client.checkBucket()
            return nil
        default: throw client.failure(response, what: what)
        }
    }
}

/// Dates as S3's object lock headers and bodies write them (ISO 8601, UTC).
enum S3Time {
    static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    static func parse(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}

/// `<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>…`
struct ObjectLockConfiguration {
    var enabled = false

    init?(_ data: Data) {
        var enabled = false
        var root = false
        let ok = XMLCollector { path, text in
            if path == ["ObjectLockConfiguration"] { root = true }
            if path == ["ObjectLockConfiguration", "ObjectLockEnabled"] {
                enabled = text.trimmingCharacters(in: .whitespacesAndNewlines) == "Enabled"
            }
        }.parse(data)
        guard ok, root else { return nil }
        self.enabled = enabled
    }
}
