import Foundation
import KhoCore
import KhoSupport

/// Where an S3 repository lives: `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, path-style.
package struct S3Address: Sendable, Equatable, CustomStringConvertible {
    package var scheme: String
    /// The host as written in the URL (an IPv6 address keeps its brackets).
    package var host: String
    package var port: Int?
    package var bucket: String
    /// Folders inside the bucket, without leading or trailing slashes; empty for the bucket's top.
    package var prefix: String

    package init(scheme: String, host: String, port: Int?, bucket: String, prefix: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.bucket = bucket
        self.prefix = prefix
    }

    static let format = "s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]"

    package static func parse(_ text: String) throws -> S3Address {
        func bad(_ why: String) -> KhoError {
            KhoError(.usage, "\(text) is not an S3 repository address (\(why)): write it as \(format), e.g. s3:https://s3.example.vn/backups/agency.")
        }
        guard text.hasPrefix("s3:") else { throw bad("it does not start with s3:") }
        var rest = Substring(text.dropFirst(3))
        let scheme: String
        if rest.hasPrefix("https://") {
            scheme = "https"
        } else if rest.hasPrefix("http://") {
            scheme = "http"
        } else {
            throw bad("the endpoint must start with http:// or https://")
        }
        rest = rest.dropFirst(scheme.count + 3)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let path = rest[slash...]
        guard !authority.isEmpty, !authority.contains("@"), !authority.contains("?"), !authority.contains("#") else {
            throw bad("no host, or a host with user, query or fragment")
        }
        var host = String(authority)
        var port: Int?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw bad("an IPv6 address without its closing bracket") }
            host = String(authority[...close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else { throw bad("a port that is not a number") }
                port = number
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let number = Int(authority[authority.index(after: colon)...]) else { throw bad("a port that is not a number") }
            port = number
        }
        if let port, !(1...65535).contains(port) { throw bad("port \(port) is out of range") }
        guard !host.isEmpty else { throw bad("no host") }
        guard !path.contains("?"), !path.contains("#") else { throw bad("a query or fragment") }
        let parts = path.split(separator: "/").map(String.init)
        guard let bucket = parts.first else { throw bad("no bucket") }
        guard (3...63).contains(bucket.count), bucket.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" || $0 == "." }),
              bucket.allSatisfy(\.isASCII) else {
            throw bad("bucket names have 3 to 63 lowercase letters, digits, dots and hyphens")
        }
        return S3Address(scheme: scheme, host: host, port: port, bucket: bucket, prefix: parts.dropFirst().joined(separator: "/"))
    }

    /// `http://host:port` (the port only when given).
    package var endpoint: String {
        "\(scheme)://\(host)" + (port.map { ":\($0)" } ?? "")
    }

    /// The Host header as the HTTP client sends it: the default port is left out.
    var hostHeader: String {
        guard let port, !(scheme == "http" && port == 80), !(scheme == "https" && port == 443) else { return host }
        return "\(host):\(port)"
    }

    package var description: String {
        "s3:\(endpoint)/\(bucket)" + (prefix.isEmpty ? "" : "/\(prefix)")
    }

    /// The object key of a repository file.
    func key(_ handle: Handle) -> String {
        prefix.isEmpty ? handle.path : prefix + "/" + handle.path
    }

    /// The key prefix under which everything of this repository lives ("" or "prefix/").
    var rootPrefix: String {
        prefix.isEmpty ? "" : prefix + "/"
    }
}
