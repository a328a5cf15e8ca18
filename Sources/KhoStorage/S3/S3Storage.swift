internal import AsyncHTTPClient
import Dispatch
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KhoCore
import KhoSupport
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL

/// Where an S3 repository lives: `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`, path-style.
public struct S3Address: Sendable, Equatable, CustomStringConvertible {
    public var scheme: String
    /// The host as written in the URL (an IPv6 address keeps its brackets).
    public var host: String
    public var port: Int?
    public var bucket: String
    /// Folders inside the bucket, without leading or trailing slashes; empty for the bucket's top.
    public var prefix: String

    public init(scheme: String, host: String, port: Int?, bucket: String, prefix: String) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.bucket = bucket
        self.prefix = prefix
    }

    static let format = "s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]"

    public static func parse(_ text: String) throws -> S3Address {
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
    public var endpoint: String {
        "\(scheme)://\(host)" + (port.map { ":\($0)" } ?? "")
    }

    /// The Host header as the HTTP client sends it: the default port is left out.
    var hostHeader: String {
        guard let port, !(scheme == "http" && port == 80), !(scheme == "https" && port == 443) else { return host }
        return "\(host):\(port)"
    }

    public var description: String {
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

/// How an `S3Storage` talks to its server.
public struct S3Configuration: Sendable {
    public var credentials: S3Credentials
    /// The region the requests are signed for; most S3-compatible servers accept `us-east-1`.
    public var region: String = "us-east-1"
    /// How long one request may go without progress before it counts as timed out.
    public var timeout: TimeInterval = 60
    /// How often a request that timed out, lost its connection or got a 5xx answer is tried again.
    public var retries: Int = 5
    /// The first pause before trying again; each further pause doubles, up to `maximumRetryDelay`.
    public var retryDelay: TimeInterval = 0.5
    public var maximumRetryDelay: TimeInterval = 30
    /// Connections kept open to the server at most (requests above that wait for one).
    public var connections: Int = 16
    /// Objects asked for per ListObjectsV2 page (S3 gives at most 1000).
    public var listPageSize: Int = 1000
    /// A PEM file of one or more CA certificates trusted for TLS in addition to the system's trust
    /// store: for a server whose certificate a private CA signed.
    public var caFile: String?
    /// An HTTP proxy (`host:port`) that requests go through (CONNECT for https), from
    /// `https_proxy` / `http_proxy` unless `no_proxy` names the endpoint's host.
    public var proxy: S3Proxy?

    public init(credentials: S3Credentials) {
        self.credentials = credentials
    }

    /// From the environment: credentials (see `S3Credentials.fromEnvironment`), `KHO_S3_REGION` (else
    /// `AWS_DEFAULT_REGION`, `AWS_REGION`, `us-east-1`), `KHO_S3_TIMEOUT` (seconds, default 60),
    /// `KHO_S3_RETRIES` (default 5), `KHO_S3_CONNECTIONS` (default 16) and `KHO_S3_CA_FILE` (a PEM
    /// file of CA certificates trusted besides the system's store; read here, so that a missing or
    /// wrong file is a usage error before anything is sent).
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Configuration {
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
        guard text.contains("-----BEGIN CERTIFICATE-----"),
              let certificates = try? NIOSSLCertificate.fromPEMBytes([UInt8](data)), !certificates.isEmpty else {
            throw KhoError(.usage, "KHO_S3_CA_FILE=\(path) holds no PEM certificate (-----BEGIN CERTIFICATE-----): \(fix) (a DER file becomes PEM with `openssl x509 -inform der -in ca.cer -out ca.pem`).")
        }
        return certificates
    }
}

public struct S3Proxy: Sendable, Equatable {
    public var host: String
    public var port: Int
}

/// A repository in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, …), addressed path-style and
/// signed with Signature Version 4.
///
/// Objects written whole by one PUT are atomic in S3: a reader sees the old object, the new one or
/// none, never a part. Ranged reads are GETs with `Range`. Requests that time out, lose their
/// connection or get a 5xx (or 429) answer are tried again after a pause that doubles each time;
/// refused credentials (403) and a missing bucket are reported at once. Calls block the calling
/// thread: the engine's workers are threads, and each waits for its own request.
public struct S3Storage: Storage {
    public let address: S3Address
    public let configuration: S3Configuration
    let client: S3Client
    /// Object lock for files written from now on (see S3ObjectLock.swift), shared by copies.
    let retention = Locked<ObjectLockSettings?>(nil)
    public var readsAreRequests: Bool { true }

    public init(address: S3Address, configuration: S3Configuration) {
        self.address = address
        self.configuration = configuration
        client = S3Client(address: address, configuration: configuration)
    }

    public init(location: String, configuration: S3Configuration) throws {
        let address = try S3Address.parse(location)
        var configuration = configuration
        if configuration.proxy == nil {
            configuration.proxy = try S3Configuration.proxy(for: address, environment: configuration.proxyEnvironment)
        }
        self.init(address: address, configuration: configuration)
    }

    public var location: String { address.description }

    // MARK: the five verbs

    public func save(_ handle: Handle, data: [UInt8]) throws {
        // Files named by the SHA-256 of their bytes (docs/FORMAT.md) carry that name as the signed
        // payload hash: no second pass over a pack, and a server that checks payloads (AWS,
        // MinIO) refuses a body that does not match its name instead of storing it.
        let response = try client.send("PUT", key: address.key(handle), headers: lockHeaders(for: handle, body: data), body: data,
                                       bodyHash: handle.isNamedByContent ? handle.name : nil, what: "write \(handle.path)")
        guard (200...299).contains(response.status) else {
            throw client.failure(response, what: "write \(handle.path)")
        }
    }

    public func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] {
        precondition(offset >= 0 && (length ?? 0) >= 0)
        if length == 0 {
            // There is no empty range in HTTP: ask for the size instead.
            let size = try stat(handle).size
            guard offset <= size else { throw short(handle, offset: offset, wanted: 0, found: 0) }
            return []
        }
        var headers: [String: String] = [:]
        if let length {
            headers["Range"] = "bytes=\(offset)-\(offset + length - 1)"
        } else if offset > 0 {
            headers["Range"] = "bytes=\(offset)-"
        }
        let what = "read \(handle.path)"
        if let length, length > handle.kind.maximumSize { throw handle.kind.tooLarge(handle, size: length, in: address.description) }
        let response = try client.send("GET", key: address.key(handle), headers: headers, what: what,
                                       maxBody: length ?? handle.kind.maximumSize,
                                       tooLarge: { handle.kind.tooLarge(handle, size: $0, in: self.address.description) })
        switch response.status {
        case 200:
            // The whole object (no range asked, or a server that ignores ranges).
            let all = response.bytes
            if offset == 0 && (length == nil || length == all.count) { return all }
            let end = length.map { offset + $0 } ?? max(offset, all.count)
            guard end <= all.count else {
                throw short(handle, offset: offset, wanted: length ?? 0, found: max(0, all.count - offset))
            }
            return Array(all[offset..<end])
        case 206:
            let bytes = response.bytes
            if let length, bytes.count != length {
                throw short(handle, offset: offset, wanted: length, found: bytes.count)
            }
            return bytes
        case 404:
            throw client.notFound(response, handle: handle)
        case 416:
            // The range starts at or past the end: the object exists but is shorter.
            if length == nil { return [] }
            throw short(handle, offset: offset, wanted: length!, found: 0)
        default:
            throw client.failure(response, what: what)
        }
    }

    public func stat(_ handle: Handle) throws -> StoredFile {
        let what = "look up \(handle.path)"
        let response = try client.send("HEAD", key: address.key(handle), what: what)
        switch response.status {
        case 200...299:
            guard let text = response.headers["content-length"], let size = Int(text) else {
                throw KhoError(.storage, "The S3 server at \(address.endpoint) gave no size for \(handle.path): it does not behave like S3.")
            }
            return StoredFile(name: handle.name, size: size)
        case 404:
            // A HEAD answer has no body to tell a missing object from a missing bucket.
            try client.checkBucket()
            throw KhoError.missing(handle, in: location)
        default:
            throw client.failure(response, what: what)
        }
    }

    public func list(_ kind: FileKind) throws -> [StoredFile] {
        if kind == .config {
            do { return [try stat(.config)] } catch let error as KhoError where error.kind == .integrity { return [] }
        }
        let base = address.rootPrefix + kind.folder + "/"
        var result: [StoredFile] = []
        for object in try client.listObjects(prefix: base, limit: nil) {
            let rest = object.key.dropFirst(base.count)
            let name: Substring
            if kind == .data {
                // data/xx/NAME, where xx is the fan-out folder.
                let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, parts[0].count == 2 else { continue }
                name = parts[1]
            } else {
                guard !rest.contains("/") else { continue }
                name = rest
            }
            guard !name.isEmpty, !name.hasPrefix(".") else { continue }
            result.append(StoredFile(name: String(name), size: object.size, modified: object.modified))
        }
        return result
    }

    public func remove(_ handle: Handle) throws {
        let what = "remove \(handle.path)"
        var query: [(String, String)] = []
        // A lock file is rewritten while held, so it has several versions: removing only the
        // newest would bring back the one before it. It is never locked, and hiding it behind a
        // delete marker is what releasing it needs.
        if retention.current != nil && handle.kind != .lock {
            // In a versioned (object lock) bucket a plain DELETE only hides the object behind a
            // delete marker; removing the version itself frees the space, and fails while locked.
            guard let version = try removableVersion(handle) else { return }
            if !version.isEmpty { query = [("versionId", version)] }
        }
        let response = try client.send("DELETE", key: address.key(handle), query: query, what: what)
        switch response.status {
        case 200...299:
            return
        case 404:
            // Some servers answer NoSuchKey; removing what is gone is not an error.
            if S3ErrorBody(response.body)?.code == "NoSuchBucket" { throw client.bucketMissing() }
            return
        case 403 where !query.isEmpty && handle.kind == .lock:
            // A bucket whose default retention locked the lock file too: hiding it is enough.
            let hidden = try client.send("DELETE", key: address.key(handle), what: what)
            guard (200...299).contains(hidden.status) || hidden.status == 404 else { throw client.failure(hidden, what: what) }
        case 403 where !query.isEmpty && S3ErrorBody(response.body)?.code == "AccessDenied":
            throw KhoError(.failure, "The S3 server at \(address.endpoint) refused to remove \(handle.path) (AccessDenied): it is still under object lock or the key may not delete versions; run `kho prune` again after the lock date.")
        default:
            throw client.failure(response, what: what)
        }
    }

    public func isEmpty() throws -> Bool {
        try client.listObjects(prefix: address.rootPrefix, limit: 1).isEmpty
    }

    // MARK: beyond the protocol

    /// One request that proves the server answers, the credentials are accepted and the bucket
    /// exists, so that a wrong setting is reported before anything else is tried.
    public func checkAccess() throws {
        _ = try client.listObjects(prefix: address.rootPrefix, limit: 1)
    }

    private func short(_ handle: Handle, offset: Int, wanted: Int, found: Int) -> KhoError {
        KhoError(.integrity, "\(handle.path) is shorter than expected (wanted \(wanted) bytes at offset \(offset), found \(found)): the object is truncated; run `kho check`.")
    }
}

// MARK: - HTTP

struct S3Response: Sendable {
    var status: Int
    /// Header names in lowercase.
    var headers: [String: String]
    /// The body, copied once from the connection's buffers into memory sized by Content-Length.
    var bytes: [UInt8]

    /// Small bodies (errors, listings) for the XML readers.
    var body: Data { Data(bytes) }
}

/// Gathers a response for `S3Response`. AsyncHTTPClient's own accumulator grows a `ByteBuffer`
/// by doubling as parts arrive, which for a 16 MiB pack means copies on the way and a buffer of
/// up to twice its size, then one more copy out of it; here the array is sized once from
/// Content-Length and each part is copied into it once.
final class S3ResponseCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = S3Response
    // Called on one event loop, one call after the other (AsyncHTTPClient's promise).
    private var status = 0
    private var headers: [String: String] = [:]
    private var bytes: [UInt8] = []
    private let isHead: Bool
    /// The most body bytes accepted: more fails the request before they are held in memory.
    private let limit: Int
    private let tooLarge: @Sendable (Int) -> KhoError

    init(method: HTTPMethod, limit: Int, tooLarge: @escaping @Sendable (Int) -> KhoError) {
        isHead = method == .HEAD
        self.limit = limit
        self.tooLarge = tooLarge
    }

    func didReceiveHead(task: HTTPClient.Task<S3Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        status = Int(head.status.code)
        for (name, value) in head.headers {
            let name = name.lowercased()
            headers[name] = headers[name].map { $0 + ", " + value } ?? value
        }
        // A HEAD answer names the object's length without a body: reserve nothing then.
        if let length = headers["content-length"].flatMap(Int.init), length > 0, !isHead {
            if length > limit && (200...299).contains(status) { return task.eventLoop.makeFailedFuture(tooLarge(length)) }
            bytes.reserveCapacity(min(length, limit))
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<S3Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        // An error answer carries a small XML body whatever was asked for.
        let allowed = (200...299).contains(status) ? limit : max(limit, 1 << 20)
        if bytes.count + buffer.readableBytes > allowed { return task.eventLoop.makeFailedFuture(tooLarge(bytes.count + buffer.readableBytes)) }
        bytes.append(contentsOf: buffer.readableBytesView)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<S3Response>) throws -> S3Response {
        S3Response(status: status, headers: headers, bytes: bytes)
    }
}

struct S3Object: Sendable, Equatable {
    var key: String
    var size: Int
    /// LastModified, by the server's clock (lock staleness, the age of unindexed packs).
    var modified: Date? = nil
}

/// Signs, sends and retries requests; shared by the copies of one `S3Storage`.
///
/// The transport is AsyncHTTPClient (SwiftNIO, TLS by BoringSSL through NIOSSL): one `HTTPClient`
/// per `S3Client`, on NIO's shared event loops, with at most `configuration.connections`
/// connections to the server. The calling thread (an engine worker, never an event loop) waits
/// for each answer.
final class S3Client: @unchecked Sendable {
    let address: S3Address
    let configuration: S3Configuration
    private let http: HTTPClient
    /// Why no request can be sent (an unusable `caFile`), reported by every `send`.
    private let setupError: KhoError?
    private let bucketSeen = Locked(false)

    init(address: S3Address, configuration: S3Configuration) {
        self.address = address
        self.configuration = configuration
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .default
        var setupError: KhoError?
        if let caFile = configuration.caFile {
            do {
                tls.additionalTrustRoots = [.certificates(try S3Configuration.loadCertificates(caFile))]
            } catch {
                setupError = error as? KhoError ?? KhoError(.usage, "KHO_S3_CA_FILE=\(caFile) cannot be used (\(error)): set it to the PEM file of the CA that signed the S3 server's certificate, or unset it.")
            }
        }
        self.setupError = setupError
        let stall = TimeAmount.nanoseconds(Int64(configuration.timeout * 1e9))
        var settings = HTTPClient.Configuration(
            tlsConfiguration: tls,
            // Redirects are answers to report (a bucket in another region), not to follow unsigned.
            redirectConfiguration: .disallow,
            // Only a stall counts: no connection, no byte read or no byte written for that long.
            timeout: HTTPClient.Configuration.Timeout(connect: stall, read: stall, write: stall),
            connectionPool: HTTPClient.Configuration.ConnectionPool(
                idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.connections),
            proxy: configuration.proxy.map { .server(host: $0.host, port: $0.port) },
            ignoreUncleanSSLShutdown: false,
            decompression: .disabled)
        // A connection that cannot be made fails its request at once: `send` decides whether and
        // when to try again (and a refused certificate is never tried again).
        settings.connectionPool.retryConnectionEstablishment = false
        // One request per connection at a time, so that `connections` means what it says.
        settings.httpVersion = .http1Only
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: settings)
    }

    deinit {
        // Not syncShutdown: the last copy may be released anywhere; the client keeps itself alive
        // until its connections are closed.
        http.shutdown { _ in }
    }

    /// Sends one request, trying again on timeouts, lost connections and 5xx/429 answers.
    /// Of `headers`, `x-amz-*` and `Content-MD5` are signed (S3 insists on signed `x-amz-*`), the
    /// rest (`Range`) sent unsigned; `what` names the operation in messages. `bodyHash` is the
    /// body's SHA-256 in hex when the caller knows it already (a file named by its hash).
    func send(_ method: String, key: String?, query: [(String, String)] = [], headers: [String: String] = [:],
              body: [UInt8]? = nil, bodyHash: String? = nil, what: String, maxBody: Int = 64 << 20,
              tooLarge: @escaping @Sendable (Int) -> KhoError = { KhoError(.storage, "An S3 answer of \($0) bytes is larger than any kho asks for: check that the endpoint is an S3 server.") }) throws -> S3Response {
        if let setupError { throw setupError }
        let encodedPath = "/" + SigV4.uriEncode(address.bucket, keepSlash: false)
            + (key.map { "/" + SigV4.uriEncode($0, keepSlash: true) } ?? "")
        let queryText = SigV4.canonicalQuery(query)
        let url = address.endpoint + encodedPath + (queryText.isEmpty ? "" : "?" + queryText)
        guard URL(string: url) != nil else {
            throw KhoError(.usage, "\(address) does not make a valid URL for \(what).")
        }
        let payloadHash = try body.map { try bodyHash ?? SHA256.hash($0).hex } ?? SigV4.emptyPayloadHash
        var attempt = 0
        while true {
            attempt += 1
            var request: HTTPClient.Request
            do {
                request = try HTTPClient.Request(url: url, method: HTTPMethod(rawValue: method))
            } catch {
                throw KhoError(.usage, "\(address) does not make a valid URL for \(what) (\(error)).")
            }
            var signed: [String: String] = [
                "host": address.hostHeader,
                "x-amz-date": SigV4.timestamps(Date()).time,
                "x-amz-content-sha256": payloadHash,
            ]
            if let token = configuration.credentials.sessionToken { signed["x-amz-security-token"] = token }
            for (name, value) in headers where Self.mustSign(name) { signed[name.lowercased()] = value }
            let signature = try SigV4.sign(method: method, encodedPath: encodedPath, query: query, headers: signed, payloadHash: payloadHash,
                                       credentials: configuration.credentials, region: configuration.region, service: "s3",
                                       time: signed["x-amz-date"]!)
            // The Host header exactly as signed (the HTTP client would add its own otherwise).
            for (name, value) in signed { request.headers.replaceOrAdd(name: name, value: value) }
            for (name, value) in headers where !Self.mustSign(name) { request.headers.replaceOrAdd(name: name, value: value) }
            request.headers.replaceOrAdd(name: "Authorization", value: signature.authorization)
            if let body {
                // Content-Length comes from the body; the body goes at once (no "Expect: 100-continue"),
                // copied to the connection 4 MiB at a time as the socket takes it: no second copy of
                // a whole pack per upload.
                request.headers.replaceOrAdd(name: "Content-Type", value: "application/octet-stream")
                request.body = .bytes(body)
            }
            let outcome = perform(request, maxBody: maxBody, tooLarge: tooLarge)
            let reason: String
            switch outcome {
            case .success(let response):
                // 400 RequestTimeout: the server gave up waiting for the body; sending again helps.
                if response.status >= 500 || response.status == 429
                    || (response.status == 400 && S3ErrorBody(response.body)?.code == "RequestTimeout") {
                    reason = "HTTP \(response.status)" + (S3ErrorBody(response.body).map { " \($0.code)" } ?? "")
                    if attempt > configuration.retries {
                        throw KhoError(.storage, "The S3 server at \(address.endpoint) kept failing\(throughProxy) to \(what) (\(reason), \(Self.attempts(attempt))): check the server's health, then run the command again.", retryable: true)
                    }
                } else {
                    if (200...299).contains(response.status) { bucketSeen.withLock { $0 = true } }
                    return response
                }
            case .failure(let error as KhoError):
                // Refused by the collector (a body larger than the format allows): not a network fault.
                throw error
            case .failure(let error):
                let problem = TransportProblem(error, caFile: configuration.caFile, host: address.host)
                reason = problem.description
                if !problem.isTransient {
                    throw KhoError(.storage, "Cannot \(what) on the S3 server at \(address.endpoint)\(throughProxy): \(reason).")
                }
                if attempt > configuration.retries {
                    if configuration.proxy != nil {
                        throw KhoError(.storage, "The S3 server at \(address.endpoint) could not be reached\(throughProxy) to \(what) (\(reason), \(Self.attempts(attempt))): check that the proxy runs and lets this host through, or set no_proxy to reach the server directly, then run the command again.", retryable: true)
                    }
                    throw KhoError(.storage, "The S3 server at \(address.endpoint) did not answer when asked to \(what) (\(reason), \(Self.attempts(attempt))): check that it runs and can be reached, then run the command again.", retryable: true)
                }
            }
            let pause = min(configuration.maximumRetryDelay, configuration.retryDelay * Double(1 << min(attempt - 1, 20)))
            Thread.sleep(forTimeInterval: pause * Double.random(in: 0.75...1.0))
        }
    }

    /// " through the proxy HOST:PORT (https_proxy)" when requests go through a proxy, for messages:
    /// a refusal may be the proxy's, and the operator should know where to look.
    private var throughProxy: String {
        guard let proxy = configuration.proxy else { return "" }
        return " through the proxy \(proxy.host):\(proxy.port) (\(address.scheme == "https" ? "https_proxy" : "http_proxy"))"
    }

    static func attempts(_ count: Int) -> String { count == 1 ? "1 attempt" : "\(count) attempts" }

    static func mustSign(_ header: String) -> Bool {
        let name = header.lowercased()
        return name.hasPrefix("x-amz-") || name == "content-md5"
    }

    /// One attempt, waited for on the calling thread. A 16 MiB pack on a slow line may take long:
    /// only a stall times out (the client's timeouts), and a whole request has a generous deadline.
    private func perform(_ request: HTTPClient.Request, maxBody: Int, tooLarge: @escaping @Sendable (Int) -> KhoError) -> Result<S3Response, any Error> {
        let deadline = NIODeadline.now() + .nanoseconds(Int64(max(configuration.timeout * 20, 3600) * 1e9))
        do {
            let collector = S3ResponseCollector(method: request.method, limit: maxBody, tooLarge: tooLarge)
            return .success(try http.execute(request: request, delegate: collector, deadline: deadline).wait())
        } catch {
            return .failure(error)
        }
    }

    // MARK: listing

    /// Every object under `prefix` (ListObjectsV2, page by page), or at most `limit`.
    func listObjects(prefix: String, limit: Int?) throws -> [S3Object] {
        var objects: [S3Object] = []
        var token: String?
        var seenTokens = Set<String>()
        repeat {
            var query: [(String, String)] = [("list-type", "2"), ("prefix", prefix)]
            query.append(("max-keys", String(min(limit ?? configuration.listPageSize, configuration.listPageSize))))
            if let token { query.append(("continuation-token", token)) }
            let what = prefix.isEmpty ? "list bucket \(address.bucket)" : "list the objects under \(prefix)"
            let response = try send("GET", key: nil, query: query, what: what)
            guard response.status == 200 else {
                if response.status == 404 { throw bucketMissing() }
                throw failure(response, what: what)
            }
            guard let page = ListPage(response.body) else {
                throw KhoError(.storage, "The S3 server at \(address.endpoint) answered a listing of \(address.bucket) with something that is not a ListObjectsV2 result: it does not behave like S3.")
            }
            objects += page.objects
            if let limit, objects.count >= limit { return Array(objects.prefix(limit)) }
            guard page.truncated else { break }
            guard let next = page.nextToken, !next.isEmpty, seenTokens.insert(next).inserted else {
                throw KhoError(.storage, "The S3 server at \(address.endpoint) said a listing of \(address.bucket) goes on but gave no new continuation token: it does not behave like S3.", retryable: true)
            }
            token = next
        } while true
        return objects
    }

    /// Throws when the bucket is missing (after a 404 without a body), once; afterwards trusted.
    func checkBucket() throws {
        if bucketSeen.current { return }
        _ = try listObjects(prefix: address.rootPrefix, limit: 1)
    }

    // MARK: errors

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

/// A request that got no HTTP answer (no connection, a timeout, a lost connection, a refused TLS
/// certificate), in words, and whether trying again may help.
struct TransportProblem: CustomStringConvertible {
    var description: String
    var isTransient: Bool
    var isCertificateProblem = false

    /// `caFile` and `host` only shape the advice for a refused certificate.
    init(_ error: any Error, caFile: String?, host: String) {
        self.init(description: "", isTransient: true)
        self.host = host
        classify(error, caFile: caFile)
    }

    private var host = ""

    private init(description: String, isTransient: Bool) {
        self.description = description
        self.isTransient = isTransient
    }

    private mutating func set(_ text: String, transient: Bool) {
        description = text
        isTransient = transient
    }

    private mutating func classify(_ error: any Error, caFile: String?) {
        switch error {
        case let error as HTTPClientError:
            switch error {
            case .readTimeout, .writeTimeout, .connectTimeout, .tlsHandshakeTimeout, .deadlineExceeded, .getConnectionFromPoolTimeout:
                set("timed out", transient: true)
            case .remoteConnectionClosed, .uncleanShutdown, .requestStreamCancelled:
                set("connection lost", transient: true)
            case .proxyAuthenticationRequired:
                set("the proxy asks for a user and password (407), which kho does not send", transient: false)
            case .invalidProxyResponse:
                set("the proxy refused to open a connection to the server", transient: false)
            case .invalidURL, .emptyHost, .emptyScheme, .alreadyShutdown, .shutdownUnsupported, .redirectLimitReached,
                 .redirectCycleDetected, .invalidRedirectConfiguration, .invalidHTTPVersionConfiguration, .bodyLengthMismatch,
                 .invalidProxyConfiguration:
                set("\(error)", transient: false)
            default:
                set("\(error)", transient: true)
            }
        case let error as NIOConnectionError:
            if let dns = error.dnsAError ?? error.dnsAAAAError, error.connectionErrors.isEmpty {
                set("host name not found (\(dns))", transient: true)
            } else if let first = error.connectionErrors.first {
                classify(first.error, caFile: caFile)
            } else {
                set("cannot connect", transient: true)
            }
        case let error as IOError:
            switch error.errnoCode {
            case ECONNREFUSED: set("connection refused", transient: true)
            case ECONNRESET, EPIPE, ECONNABORTED: set("connection lost", transient: true)
            case ETIMEDOUT: set("timed out", transient: true)
            case ENETUNREACH, EHOSTUNREACH: set("no route to the server", transient: true)
            default: set("\(error)", transient: true)
            }
        case let error as ChannelError:
            switch error {
            case .connectTimeout: set("timed out", transient: true)
            case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed, .eof: set("connection lost", transient: true)
            default: set("\(error)", transient: true)
            }
        case let error as NIOSSLExtraError where error == .failedToValidateHostname || error == .serverHostnameImpossibleToMatch:
            isCertificateProblem = true
            set("its TLS certificate is refused (it is not for \(host)): write the repository address with a host name that the certificate names, or have the server's certificate made for \(host)", transient: false)
        case let error as NIOSSLError:
            switch error {
            case .handshakeFailed(let reason):
                let text = "\(reason)"
                if text.contains("CERTIFICATE_VERIFY_FAILED") || text.lowercased().contains("certificate") {
                    certificate(Self.boringSSLReason(text), caFile: caFile)
                } else if case .syscallError = reason {
                    set("connection lost during the TLS handshake", transient: true)
                } else {
                    // The server does not speak TLS there, or no protocol or cipher in common:
                    // a setting to correct, not a moment to wait out.
                    set("the TLS handshake failed (\(Self.boringSSLReason(text))); check that the server speaks https on that port", transient: false)
                }
            case .uncleanShutdown:
                set("connection lost", transient: true)
            case .unableToValidateCertificate, .noCertificateToValidate:
                certificate("\(error)", caFile: caFile)
            default:
                set("TLS error \(error)", transient: true)
            }
        case let error as BoringSSLError:
            certificateOrTLS("\(error)", caFile: caFile)
        default:
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                certificate(Self.boringSSLReason(text), caFile: caFile)
            } else {
                set(text, transient: true)
            }
        }
    }

    private mutating func certificateOrTLS(_ text: String, caFile: String?) {
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            certificate(Self.boringSSLReason(text), caFile: caFile)
        } else {
            set("TLS error \(Self.boringSSLReason(text))", transient: true)
        }
    }

    /// A certificate the trust roots do not accept: never tried again, with the way out.
    private mutating func certificate(_ detail: String, caFile: String?) {
        isCertificateProblem = true
        if let caFile {
            set("its TLS certificate is refused (\(detail): signed neither by the CA of KHO_S3_CA_FILE=\(caFile) nor by one the system trusts, or expired): check that this file holds the CA that signed the server's certificate", transient: false)
        } else {
            set("its TLS certificate is refused (\(detail): not signed by a CA this system trusts, or expired); if a private CA signed it, set KHO_S3_CA_FILE to that CA's PEM file, or add the CA to the system's certificate store (copy it to /usr/local/share/ca-certificates/NAME.crt, then run update-ca-certificates)", transient: false)
        }
    }

    /// "…:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED]…" → "CERTIFICATE_VERIFY_FAILED".
    static func boringSSLReason(_ text: String) -> String {
        var reasons: [String] = []
        for part in text.split(separator: "error:").dropFirst() {
            let fields = part.split(separator: ":")
            if fields.count >= 4 {
                let reason = fields[3].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                if !reason.isEmpty && !reasons.contains(String(reason)) { reasons.append(String(reason)) }
            }
        }
        return reasons.isEmpty ? text : reasons.joined(separator: ", ")
    }
}

// MARK: - XML

/// Collects the text of elements by their path (e.g. `Error/Code`), calling `element` when one
/// ends. XMLParser is the one XML reader Foundation has on Linux.
final class XMLCollector: NSObject, XMLParserDelegate {
    private var path: [String] = []
    private var text = ""
    private let element: (_ path: [String], _ text: String) -> Void

    init(element: @escaping (_ path: [String], _ text: String) -> Void) {
        self.element = element
    }

    func parse(_ data: Data) -> Bool {
        let parser = XMLParser(data: data)
        parser.delegate = self
        parser.shouldProcessNamespaces = true
        return parser.parse()
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        path.append(elementName)
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
        element(path, text)
        text = ""
        path.removeLast()
    }
}

/// An S3 error answer: `<Error><Code>…</Code><Message>…</Message></Error>`.
struct S3ErrorBody {
    var code = ""
    var message = ""
    var endpoint: String?

    init?(_ data: Data) {
        guard !data.isEmpty else { return nil }
        var result = S3ErrorBody(code: "", message: "")
        let ok = XMLCollector { path, text in
            guard path.count == 2, path[0] == "Error" else { return }
            switch path[1] {
            case "Code": result.code = text
            case "Message": result.message = text
            case "Endpoint": result.endpoint = text
            default: break
            }
        }.parse(data)
        guard ok, !result.code.isEmpty else { return nil }
        self = result
    }

    private init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// One page of a ListObjectsV2 answer.
struct ListPage {
    var objects: [S3Object] = []
    var truncated = false
    var nextToken: String?

    init?(_ data: Data) {
        var page = ListPage()
        var key: String?
        var size: Int?
        var modified: Date?
        var broken = false
        var root = false
        let ok = XMLCollector { path, text in
            switch path {
            case ["ListBucketResult"]: root = true
            case ["ListBucketResult", "IsTruncated"]: page.truncated = text.trimmingCharacters(in: .whitespaces) == "true"
            case ["ListBucketResult", "NextContinuationToken"]: page.nextToken = text
            case ["ListBucketResult", "Contents", "Key"]: key = text
            case ["ListBucketResult", "Contents", "Size"]: size = Int(text.trimmingCharacters(in: .whitespaces))
            case ["ListBucketResult", "Contents", "LastModified"]: modified = Timestamp.parse(text.trimmingCharacters(in: .whitespaces))
            case ["ListBucketResult", "Contents"]:
                if let key, let size { page.objects.append(S3Object(key: key, size: size, modified: modified)) } else { broken = true }
                key = nil
                size = nil
                modified = nil
            default: break
            }
        }.parse(data)
        guard ok, root, !broken else { return nil }
        self = page
    }

    private init() {}
}
