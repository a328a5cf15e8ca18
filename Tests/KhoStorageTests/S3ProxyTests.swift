import Foundation
import Testing
@testable import KhoStorage
import KhoCore
import KhoSupport
import KhoTestSupport

@Suite("S3 proxy variables")
struct S3ProxyTests {
    private func proxy(_ location: String, _ environment: [String: String]) throws -> S3Proxy? {
        try S3Configuration.proxy(for: try S3Address.parse(location), environment: environment)
    }

    @Test("https_proxy for https endpoints, http_proxy for http ones, either spelling")
    func byScheme() throws {
        let env = ["https_proxy": "http://proxy.so-tt.vn:3128/", "HTTP_PROXY": "10.0.0.9:8080"]
        #expect(try proxy("s3:https://s3.example.vn/backups", env) == S3Proxy(host: "proxy.so-tt.vn", port: 3128))
        #expect(try proxy("s3:http://minio.internal:9000/backups", env) == S3Proxy(host: "10.0.0.9", port: 8080))
        #expect(try proxy("s3:https://s3.example.vn/backups", [:]) == nil)
    }

    @Test("no_proxy: exact hosts, domains with or without a leading dot or star, and *; loopback never proxied")
    func exceptions() throws {
        let env = ["https_proxy": "http://proxy:3128", "no_proxy": "minio.local, .tinh.gov.vn,*.kho.vn"]
        #expect(try proxy("s3:https://minio.local/b-1", env) == nil)
        #expect(try proxy("s3:https://s3.tinh.gov.vn/b-1", env) == nil)
        #expect(try proxy("s3:https://a.kho.vn/b-1", env) == nil)
        #expect(try proxy("s3:https://s3.other.vn/b-1", env) == S3Proxy(host: "proxy", port: 3128))
        #expect(try proxy("s3:https://s3.other.vn/b-1", env.merging(["NO_PROXY": "*"]) { a, _ in a }) == S3Proxy(host: "proxy", port: 3128))
        #expect(try proxy("s3:https://s3.other.vn/b-1", ["https_proxy": "http://proxy:3128", "NO_PROXY": "*"]) == nil)
        #expect(try proxy("s3:https://127.0.0.1:9000/b-1", env) == nil)
        #expect(try proxy("s3:https://localhost:9000/b-1", env) == nil)
    }

    @Test("a proxy with credentials or without a port is a usage error naming the variable")
    func refused() throws {
        let withUser = #expect(throws: KhoError.self) { try proxy("s3:https://s3.example.vn/b-1", ["https_proxy": "http://u:p@proxy:3128"]) }
        #expect(withUser?.kind == .usage && withUser?.message.contains("https_proxy names a proxy with a user and password") == true)
        let noPort = #expect(throws: KhoError.self) { try proxy("s3:https://s3.example.vn/b-1", ["HTTPS_PROXY": "proxy"]) }
        #expect(noPort?.kind == .usage && noPort?.message.contains("HTTPS_PROXY=proxy is not a proxy address") == true)
    }
}

/// scripts/lib/s3-test-server.py forward-proxy: an HTTP forward proxy on 127.0.0.1 (CONNECT for
/// https, absolute-form requests for http) that counts the requests and tunnels it handled.
/// `resolve` gives it host names that only it knows (name → address).
final class ForwardProxy: Sendable {
    private let helper: CountingHelper
    var port: Int { helper.port }
    /// What `http_proxy` / `https_proxy` hold to name it.
    var url: String { "http://127.0.0.1:\(port)" }

    init(resolve: [String: String] = [:]) throws {
        helper = try CountingHelper("forward-proxy", resolve.sorted { $0.key < $1.key }.flatMap { ["--resolve", "\($0.key)=\($0.value)"] })
    }

    /// Requests (plain http) and CONNECT tunnels (https) handled so far.
    var handled: Int { helper.count }
}

extension S3ProxyTests {
    /// Real traffic through a real forward proxy, with the proxy taken from the environment as kho
    /// takes it. Loopback hosts never use a proxy (see `exceptions()`), so these tests address moto
    /// by a name that only the proxy knows (it resolves it to 127.0.0.1): an answer means the
    /// request went through the proxy.
    @Suite(.privateCATLSServer,
           .enabled(if: PrivateCATLSServer.unavailableReason == nil, Comment(rawValue: PrivateCATLSServer.unavailableReason ?? "")))
    struct ThroughAForwardProxy {
        /// Without a dot: moto takes a dotted host name for a virtual-hosted bucket.
        static let name = "kho-s3-behind-proxy"

        /// Settings as kho makes them from moto's key, `variables` (the proxy's) and the CA file,
        /// with quick pauses between attempts.
        func configuration(_ server: PrivateCATLSServer, _ variables: [String: String], caFile: String? = nil,
                           retries: Int = 3) throws -> S3Configuration {
            var configuration = try S3Configuration.fromEnvironment(server.environment(caFile: caFile).merging(variables) { $1 })
            configuration.timeout = 20
            configuration.retries = retries
            configuration.retryDelay = 0.05
            configuration.maximumRetryDelay = 0.5
            return configuration
        }

        /// A storage at `endpoint` under a prefix nobody used yet.
        func storage(_ endpoint: String, _ configuration: S3Configuration) throws -> S3Storage {
            try S3Storage(location: "s3:\(endpoint)/\(MotoServer.bucket)/proxy-\(UUID().uuidString.lowercased())", configuration: configuration)
        }

        /// checkAccess, save, load (whole and a range), list, remove; `after` is called after each.
        func exercise(_ storage: S3Storage, seed: UInt64, after: (String) -> Void = { _ in }) throws {
            try storage.checkAccess()
            after("checkAccess")
            var rng = SplitMix64(seed: seed)
            let handle = Handle(.data, rng.name())
            let data = rng.bytes(3 << 20)
            try storage.save(handle, data: data)
            after("save")
            #expect(try storage.load(handle) == data)
            after("load")
            #expect(try storage.load(handle, offset: 1_000_000, length: 1000) == Array(data[1_000_000..<1_001_000]))
            after("ranged load")
            #expect(try storage.list(.data) == [StoredFile(name: handle.name, size: data.count)])
            after("list")
            try storage.remove(handle)
            after("remove")
            #expect(try storage.isEmpty())
        }

        @Test func plainHTTPGoesThroughTheProxyOfHTTPProxy() throws {
            let server = try PrivateCATLSServer.requireShared()
            let proxy = try ForwardProxy(resolve: [Self.name: "127.0.0.1"])
            // https_proxy is for https endpoints: one where nothing listens shows it is not used.
            let unused = "http://127.0.0.1:\(try S3TestSupport.freePort())"
            let storage = try storage("http://\(Self.name):\(server.moto.port)",
                                      configuration(server, ["http_proxy": proxy.url, "https_proxy": unused]))
            #expect(storage.configuration.proxy == S3Proxy(host: "127.0.0.1", port: proxy.port))
            var seen = proxy.handled
            #expect(seen == 0)
            try exercise(storage, seed: 71) { verb in
                let now = proxy.handled
                #expect(now > seen, "\(verb) went through the proxy")
                seen = now
            }
        }

        @Test func hostsThatNoProxyListsGoDirect() throws {
            let server = try PrivateCATLSServer.requireShared()
            let proxy = try ForwardProxy(resolve: [Self.name: "127.0.0.1"])
            // 127.0.0.1 in no_proxy (a loopback address would go direct anyway): straight to moto.
            let listed = try storage(server.moto.endpoint, configuration(server, ["http_proxy": proxy.url, "no_proxy": "127.0.0.1"]))
            #expect(listed.configuration.proxy == nil)
            try exercise(listed, seed: 72)
            let loopback = try storage(server.moto.endpoint, configuration(server, ["HTTP_PROXY": proxy.url]))
            #expect(loopback.configuration.proxy == nil)
            try exercise(loopback, seed: 73)
            #expect(proxy.handled == 0)
            // A name that no_proxy lists goes direct too: looked up here, where nobody knows it
            // ("host name not found"), instead of being handed to the proxy, which does.
            let named = try storage("http://\(Self.name):\(server.moto.port)",
                                    configuration(server, ["http_proxy": proxy.url, "no_proxy": "s3.example.vn, \(Self.name)"], retries: 0))
            #expect(named.configuration.proxy == nil)
            let error = #expect(throws: KhoError.self) { try named.checkAccess() }
            #expect(error?.kind == .storage, "\(error?.message ?? "")")
            #expect(proxy.handled == 0)
        }

        @Test func httpsGoesThroughACONNECTTunnelOfHTTPSProxy() throws {
            let server = try PrivateCATLSServer.requireShared()
            // The TLS front's certificate is for the name only the proxy knows: checked end to end
            // through the tunnel.
            let (certificate, key) = try server.ca.serverCertificate("behind-proxy", names: [Self.name])
            let front = try TLSFront(target: server.moto.port, certificate: certificate, key: key)
            let proxy = try ForwardProxy(resolve: [Self.name: "127.0.0.1"])
            let unused = "http://127.0.0.1:\(try S3TestSupport.freePort())"
            let storage = try storage("https://\(Self.name):\(front.port)",
                                      configuration(server, ["https_proxy": proxy.url, "http_proxy": unused], caFile: server.ca.certificateFile))
            #expect(storage.configuration.proxy == S3Proxy(host: "127.0.0.1", port: proxy.port))
            try exercise(storage, seed: 74)
            // Every connection the TLS front accepted came through a tunnel of the proxy (an https
            // request in absolute form would get 400 from the proxy and never reach the front).
            #expect(proxy.handled >= 1)
            #expect(front.connections == proxy.handled)
        }

        @Test(arguments: ["http", "https"])
        func aProxyThatIsNotRunningIsReported(_ scheme: String) throws {
            let server = try PrivateCATLSServer.requireShared()
            let closed = "http://127.0.0.1:\(try S3TestSupport.freePort())"
            let port = scheme == "https" ? server.front.port : server.moto.port
            let storage = try storage("\(scheme)://\(Self.name):\(port)",
                                      configuration(server, ["\(scheme)_proxy": closed], caFile: server.ca.certificateFile, retries: 1))
            let error = #expect(throws: KhoError.self) { try storage.checkAccess() }
            // The message names the proxy and the variable it came from, so that the operator
            // looks at the proxy, not only at the S3 server.
            let message = error?.message ?? ""
            #expect(error?.kind == .storage && error?.retryable == true, "\(message)")
            #expect(message.hasPrefix("The S3 server at \(scheme)://\(Self.name):\(port) could not be reached through the proxy \(closed.dropFirst("http://".count)) (\(scheme)_proxy) to list the objects under proxy-"), "\(message)")
            #expect(message.contains("(connection refused, 2 attempts): check that the proxy runs and lets this host through, or set no_proxy"), "\(message)")
        }
    }
}
