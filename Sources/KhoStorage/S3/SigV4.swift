import Foundation
import Glibc
import KhoCore
import KhoSupport

/// AWS Signature Version 4 for requests whose headers carry the signature (`Authorization`).
///
/// The canonical request is: method, URI (each path segment percent-encoded once), query (pairs
/// sorted by name, names and values percent-encoded), headers (lowercase names, sorted, values
/// trimmed), the list of signed header names, and the SHA-256 of the payload; each on its own line.
/// The string to sign names the algorithm, the time, the scope (date/region/service/aws4_request)
/// and the hash of the canonical request; the key is derived from the secret by HMAC-SHA256 over the
/// scope's parts in turn.
package enum SigV4 {
    package static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// HMAC-SHA256 (OpenSSL hashes keys longer than a block first, as HMAC says).
    package static func hmac(key: [UInt8], _ data: [UInt8]) throws -> [UInt8] {
        try BlobHasher(key: SecretBytes(key)).id(of: data).bytes
    }

    /// The key that signs requests of one day, region and service.
    package static func signingKey(secret: String, date: String, region: String, service: String) throws -> [UInt8] {
        let kDate = try hmac(key: Array(("AWS4" + secret).utf8), Array(date.utf8))
        let kRegion = try hmac(key: kDate, Array(region.utf8))
        let kService = try hmac(key: kRegion, Array(service.utf8))
        return try hmac(key: kService, Array("aws4_request".utf8))
    }

    /// Percent-encodes everything except the unreserved characters `A-Z a-z 0-9 - . _ ~` (and `/`
    /// when `keepSlash`), with uppercase hex digits, byte by byte of the UTF-8 form.
    package static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        let hex: [UInt8] = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The query string in canonical form (and in the form sent: the two must match byte for byte).
    package static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (uriEncode($0.0, keepSlash: false), uriEncode($0.1, keepSlash: false)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// `20150830T123600Z` and `20150830` for `date`, in UTC.
    package static func timestamps(_ date: Date) -> (time: String, day: String) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let day = String(format: "%04d%02d%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday))
        let time = day + String(format: "T%02d%02d%02dZ", Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
        return (time, day)
    }

    package struct Signed: Sendable {
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        public var authorization: String
    }

    /// Signs a request. `encodedPath` is the path exactly as sent (already percent-encoded);
    /// `headers` are the headers to sign (they must include `host` and `x-amz-date`, and for S3
    /// `x-amz-content-sha256`) and are sent as given.
    package static func sign(method: String, encodedPath: String, query: [(String, String)], headers: [String: String],
                            payloadHash: String, credentials: S3Credentials, region: String, service: String,
                            time: String) throws -> Signed {
        let day = String(time.prefix(8))
        let canonicalHeaders = headers.map { (name: $0.key.lowercased(), value: normalize($0.value)) }.sorted { $0.name < $1.name }
        let signedHeaders = canonicalHeaders.map(\.name).joined(separator: ";")
        let canonicalRequest = [
            method,
            encodedPath.isEmpty ? "/" : encodedPath,
            canonicalQuery(query),
            canonicalHeaders.map { "\($0.name):\($0.value)\n" }.joined(),
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256",
            time,
            scope,
            try SHA256.hash(Array(canonicalRequest.utf8)).hex,
        ].joined(separator: "\n")
        let key = try signingKey(secret: credentials.secretAccessKey, date: day, region: region, service: service)
        let signature = Hex.encode(try hmac(key: key, Array(stringToSign.utf8)))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return Signed(canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature, authorization: authorization)
    }

    /// Header values are trimmed and runs of spaces inside them become one.
    private static func normalize(_ value: String) -> String {
        var out = ""
        var lastWasSpace = false
        for c in value.trimmingCharacters(in: .whitespaces) {
            if c == " " {
                if !lastWasSpace { out.append(c) }
                lastWasSpace = true
            } else {
                out.append(c)
                lastWasSpace = false
            }
        }
        return out
    }
}
