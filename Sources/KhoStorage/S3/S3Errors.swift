import Foundation
import KhoCore
import KhoSupport

// What an S3 answer that is neither success nor retried means for the operator: each status and
// S3 error code becomes a `KhoError` that names the setting or the step that fixes it.
extension S3Client {
    func bucketMissing() -> KhoError {
        KhoError(.storage, "The bucket \(address.bucket) does not exist on the S3 server at \(address.endpoint): create it (kho does not create buckets) or correct the repository address.")
    }

    func notFound(_ response: S3Response, handle: Handle) -> KhoError {
        if S3ErrorBody(response.body)?.code == "NoSuchBucket" { return bucketMissing() }
        return KhoError.missing(handle, in: address.description)
    }

    /// The message for an answer that is not success and not retried.
    func failure(_ response: S3Response, what: String) -> KhoError {
        let error = S3ErrorBody(response.body)
        let code = error?.code ?? ""
        let detail = error.map { " (\($0.code)\($0.message.isEmpty ? "" : ": \($0.message)"))" } ?? ""
        let keyID = configuration.credentials.accessKeyID
        switch (response.status, code) {
        case (404, "NoSuchBucket"):
            return bucketMissing()
        case (403, "InvalidAccessKeyId"):
            return KhoError(.storage, "The S3 server at \(address.endpoint) refused the credentials: it does not know the access key \(keyID) (InvalidAccessKeyId). Check AWS_ACCESS_KEY_ID (or the credentials file).")
        case (403, "SignatureDoesNotMatch"):
            return KhoError(.storage, "The S3 server at \(address.endpoint) refused the credentials: the secret key does not match the access key \(keyID) (SignatureDoesNotMatch). Check AWS_SECRET_ACCESS_KEY (or the credentials file).")
        case (403, "RequestTimeTooSkewed"):
            return KhoError(.storage, "The S3 server at \(address.endpoint) refused the request because this machine's clock is off (RequestTimeTooSkewed): set the time (NTP), then run the command again.")
        case (403, _):
            return KhoError(.storage, "The S3 server at \(address.endpoint) refused the credentials of access key \(keyID) when asked to \(what) in bucket \(address.bucket)\(detail.isEmpty ? " (403 Forbidden)" : detail): check the key and its permissions on the bucket.")
        case (400, "XAmzContentSHA256Mismatch"), (400, "BadDigest"):
            // The payload hash kho signs is the file's name (or the body's hash) and Content-MD5
            // the body's MD5: the server checked them and stored nothing.
            return KhoError(.storage, "The S3 server at \(address.endpoint) refused to \(what): the bytes it received do not match their checksum (\(code)), so they were damaged on the way or in this machine's memory, and nothing was stored. Run the command again; if it happens again, check the network path and this machine's memory.", retryable: true)
        case (400, "AuthorizationHeaderMalformed"), (400, "InvalidRegion"):
            return KhoError(.storage, "The S3 server at \(address.endpoint) rejected the region \(configuration.region)\(detail): set KHO_S3_REGION to the bucket's region.")
        case (301, _), (302, _), (307, _), (308, _):
            let elsewhere = error?.endpoint.map { " (it names \($0))" } ?? (response.headers["location"].map { " (it points to \($0))" } ?? "")
            return KhoError(.storage, "The S3 server at \(address.endpoint) says bucket \(address.bucket) is served elsewhere\(elsewhere): use that endpoint, or set KHO_S3_REGION to the bucket's region.")
        default:
            return KhoError(.storage, "The S3 server at \(address.endpoint) answered HTTP \(response.status)\(detail) when asked to \(what).")
        }
    }
}
