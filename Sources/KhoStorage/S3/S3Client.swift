internal import AsyncHTTPClient
import Foundation
import KhoCore
import KhoSupport
internal import NIOCore
internal import NIOHTTP1
internal import NIOSSL

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
                if Self.isRetried(response) {
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
            Thread.sleep(forTimeInterval: pause(after: attempt))
        }
    }

    /// " through the proxy HOST:PORT (https_proxy)" when requests go through a proxy, for messages:
    /// a refusal may be the proxy's, and the operator should know where to look.
    private var throughProxy: String {
        guard let proxy = configuration.proxy else { return "" }
        return " through the proxy \(proxy.host):\(proxy.port) (\(address.scheme == "https" ? "https_proxy" : "http_proxy"))"
    }

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
}
