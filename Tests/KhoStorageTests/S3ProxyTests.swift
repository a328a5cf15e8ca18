import Foundation
import Testing
@testable import KhoStorage
import KhoCore

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
