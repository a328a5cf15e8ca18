import Foundation
import KhoCore
import KhoSupport
internal import NIOSSL

/// How an `S3Storage` talks to its server.
package struct S3Configuration: Sendable {
    package var credentials: S3Credentials
    /// The region the requests are signed for; most S3-compatible servers accept `us-east-1`.
    package var region: String = "us-east-1"
    /// How long one request may go without progress before it counts as timed out.
    package var timeout: TimeInterval = 60
    /// How often a request that timed out, lost its connection or got a 5xx answer is tried again.
    package var retries: Int = 5
    /// The first pause before trying again; each further pause doubles, up to `maximumRetryDelay`.
    package var retryDelay: TimeInterval = 0.5
    package var maximumRetryDelay: TimeInterval = 30
    /// Connections kept open to the server at most (requests above that wait for one).
    package var connections: Int = 16
    /// Objects asked for per ListObjectsV2 page (S3 gives at most 1000).
    package var listPageSize: Int = 1000
    /// A PEM file of one or more CA certificates trusted for TLS in addition to the system's trust
    /// store: for a server whose certificate a private CA signed.
    package var caFile: String?
    /// An HTTP proxy (`host:port`) that requests go through (CONNECT for https), from
    /// `https_proxy` / `http_proxy` unless `no_proxy` names the endpoint's host.
    package var proxy: S3Proxy?

    package init(credentials: S3Credentials) {
        self.credentials = credentials
    }

    /// From the environment: credentials (see `S3Credentials.fromEnvironment`), `KHO_S3_REGION` (else
    /// `AWS_DEFAULT_REGION`, `AWS_REGION`, `us-east-1`), `KHO_S3_TIMEOUT` (seconds, default 60),
    /// `KHO_S3_RETRIES` (default 5), `KHO_S3_CONNECTIONS` (default 16) and `KHO_S3_CA_FILE` (a PEM
    /// file of CA certificates trusted besides the system's store; read here, so that a missing or
    /// wrong file is a usage error before anything is sent).
    package static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Configuration {
        func value(_ name: String) -> String? {
            environment[name].flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) }
        }
        var configuration = S3Configuration(credentials: try S3Credentials.fromEnvironment(environment))
        if let path = value("KHO_S3_CA_FILE") {
            _ = try loadCertificates(path)
            configuration.caFile = path
        }
        configuration.proxyEnvironment = environment
        if let region = value("KHO_S3_REGION") ?? value("AWS_DEFAULT_REGION") ?? value("AWS_REGION") {
            configuration.region = region
        }
        if let text = value("KHO_S3_TIMEOUT") {
            guard let seconds = Double(text), seconds > 0 else {
                throw KhoError(.usage, "KHO_S3_TIMEOUT=\(text) is not a number of seconds: use e.g. 60.")
            }
            configuration.timeout = seconds
        }
        if let text = value("KHO_S3_RETRIES") {
            guard let count = Int(text), count >= 0 else {
                throw KhoError(.usage, "KHO_S3_RETRIES=\(text) is not a count: use e.g. 5 (0 never tries again).")
            }
            configuration.retries = count
        }
        if let text = value("KHO_S3_CONNECTIONS") {
            guard let count = Int(text), count >= 1 else {
                throw KhoError(.usage, "KHO_S3_CONNECTIONS=\(text) is not a count of connections: use e.g. 16.")
            }
            configuration.connections = count
        }
        return configuration
    }

    /// The proxy variables, kept until the endpoint is known (`S3Storage` resolves them).
    var proxyEnvironment: [String: String] = [:]

    /// The proxy for `address` from the usual variables: `https_proxy` (or `HTTPS_PROXY`) for https
    /// endpoints, `http_proxy` (or `HTTP_PROXY`) for http ones, none when `no_proxy` (or
    /// `NO_PROXY`) lists the host, a domain it ends with, or `*`. Loopback hosts never use one.
    static func proxy(for address: S3Address, environment: [String: String]) throws -> S3Proxy? {
        func value(_ names: [String]) -> (name: String, text: String)? {
            for name in names {
                if let text = environment[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty { return (name, text) }
            }
            return nil
        }
        let variable = address.scheme == "https" ? value(["https_proxy", "HTTPS_PROXY"]) : value(["http_proxy", "HTTP_PROXY"])
        guard let variable else { return nil }
        let host = address.host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if ["localhost", "127.0.0.1", "::1"].contains(host) { return nil }
        if let skip = value(["no_proxy", "NO_PROXY"]) {
            for entry in skip.text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !entry.isEmpty {
                let domain = entry.hasPrefix("*.") ? String(entry.dropFirst(1)) : entry
                if entry == "*" || host == domain.trimmingCharacters(in: CharacterSet(charactersIn: ".")) || host.hasSuffix(domain.hasPrefix(".") ? domain : "." + domain) {
                    return nil
                }
            }
        }
        var text = variable.text
        if let scheme = text.range(of: "://") { text = String(text[scheme.upperBound...]) }
        if let slash = text.firstIndex(of: "/") { text = String(text[..<slash]) }
        guard !text.contains("@") else {
            throw KhoError(.usage, "\(variable.name) names a proxy with a user and password, which kho's S3 client does not send: use a proxy that admits the backup host by address, or unset \(variable.name).")
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port), colon > text.startIndex else {
            throw KhoError(.usage, "\(variable.name)=\(variable.text) is not a proxy address: write it as http://HOST:PORT.")
        }
        return S3Proxy(host: String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port)
    }

    /// The certificates of a PEM file (one or more `BEGIN CERTIFICATE` blocks), or a usage error
    /// that says how to correct `KHO_S3_CA_FILE`.
    static func loadCertificates(_ path: String) throws -> [NIOSSLCertificate] {
        let fix = "set KHO_S3_CA_FILE to the PEM file of the CA that signed the S3 server's certificate, or unset it to trust only the system's certificate store"
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw KhoError(.usage, "KHO_S3_CA_FILE=\(path) does not exist: \(fix).")
        }
        guard !isFolder.boolValue else {
            throw KhoError(.usage, "KHO_S3_CA_FILE=\(path) is a folder, not a file: \(fix).")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KhoError(.usage, "KHO_S3_CA_FILE=\(path) cannot be read (permissions?): make it readable by this user, or \(fix).")
        }
        let text = String(decoding: data, as: UTF8.self)
        // try?: a file NIOSSL cannot parse gets the message below, which says how to make one.
        guard text.contains("-----BEGIN CERTIFICATE-----"),
              let certificates = try? NIOSSLCertificate.fromPEMBytes([UInt8](data)), !certificates.isEmpty else {
            throw KhoError(.usage, "KHO_S3_CA_FILE=\(path) holds no PEM certificate (-----BEGIN CERTIFICATE-----): \(fix) (a DER file becomes PEM with `openssl x509 -inform der -in ca.cer -out ca.pem`).")
        }
        return certificates
    }
}

package struct S3Proxy: Sendable, Equatable {
    package var host: String
    package var port: Int
}

/// Credentials for an S3-compatible server.
package struct S3Credentials: Sendable, Equatable {
    package var accessKeyID: String
    package var secretAccessKey: String
    /// Set for temporary credentials (STS); sent as `x-amz-security-token`.
    package var sessionToken: String?

    package init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), else the profile
    /// `AWS_PROFILE` (default `default`) of the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
    /// `~/.aws/credentials`).
    package static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Credentials {
        if let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty {
            guard let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
                throw KhoError(.usage, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both for the S3 repository.")
            }
            let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
        }
        let profile = environment["AWS_PROFILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        let file = environment["AWS_SHARED_CREDENTIALS_FILE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? NSHomeDirectory()) + "/.aws/credentials"
        guard let data = FileManager.default.contents(atPath: file) else {
            throw KhoError(.usage, "No S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them to \(file) under [\(profile)].")
        }
        let values = parseProfile(String(decoding: data, as: UTF8.self), profile: profile)
        guard let id = values["aws_access_key_id"], !id.isEmpty, let secret = values["aws_secret_access_key"], !secret.isEmpty else {
            throw KhoError(.usage, "\(file) has no aws_access_key_id and aws_secret_access_key under [\(profile)]: add them, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
        }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: values["aws_session_token"])
    }

    /// The `key = value` lines of one `[profile]` section of an AWS credentials file.
    static func parseProfile(_ text: String, profile: String) -> [String: String] {
        var values: [String: String] = [:]
        var inside = false
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                var name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)).trimmingCharacters(in: .whitespaces) }
                inside = name == profile
                continue
            }
            guard inside, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            values[key] = value
        }
        return values
    }
}
