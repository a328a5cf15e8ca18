import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoStorage
import Testing

// Loopback S3 servers for the S3 storage tests, started by scripts/lib/s3-test-server.py:
//
// - `MotoServer`: moto's S3 server with request authentication on (every request must carry a
//   valid Signature Version 4 by a key it knows), buckets made beforehand, and two keys: `kho`
//   (every S3 action) and `reader` (GetObject only). The `.motoServer` suite trait starts one per
//   suite and makes it available as `MotoServer.shared`.
// - `TCPProxy`: a proxy in front of it that a test kills and starts again (the server "dies" and
//   "comes back" with its data), or that holds the first connections unanswered (a slow server).
//
// Both helpers exit when the test process goes away. Tests are skipped with a reason when
// `python3 -c 'import moto.server'` fails (scripts/test installs moto[server]).

package enum S3TestSupport {
    package static let packageRoot = TestPaths.packageRoot

    package static let helper = packageRoot + "/scripts/lib/s3-test-server.py"

    package static let unavailableReason: String? = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import moto.server, boto3"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return "python3 cannot be started: \(error)" }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? nil : "moto[server] is not installed (python3 -m pip install 'moto[server]')"
    }()

    package static var isAvailable: Bool { unavailableReason == nil }

    package static func temporaryFolder(_ label: String) throws -> String {
        try ServerSupport.makeTemporaryFolder(label)
    }

    /// Starts the helper and waits for it to write its ready file.
    package static func start(_ arguments: [String], folder: String, timeout: Double = 90) throws -> (Process, [String: Any]) {
        let ready = folder + "/ready-\(UUID().uuidString).json"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", helper] + arguments + ["--ready", ready]
        let log = folder + "/\(arguments[0])-\(UUID().uuidString).log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let data = FileManager.default.contents(atPath: ready),
               let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                return (process, object)
            }
            if !process.isRunning { break }
            usleep(50_000)
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw S3TestError("s3-test-server.py \(arguments.joined(separator: " ")) did not get ready:\n\(output.suffix(3000))")
    }

    /// A port on 127.0.0.1 that nothing listens on right now.
    package static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw S3TestError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw S3TestError("bind failed") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

package struct S3TestError: Error, CustomStringConvertible {
    package var description: String
    package init(_ text: String) { description = text }
}

/// moto's S3 server on a free loopback port, with authentication on.
package final class MotoServer: @unchecked Sendable {
    package static let bucket = "kho-test"
    /// A bucket that exists for tests that need one of their own.
    package static let spareBucket = "kho-spare"

    @TaskLocal package static var shared: MotoServer?

    package static func requireShared(sourceLocation: SourceLocation = #_sourceLocation) throws -> MotoServer {
        try #require(shared, "this suite needs the .motoServer trait", sourceLocation: sourceLocation)
    }

    package let folder: String
    package let port: Int
    /// User name → (access key ID, secret).
    package let keys: [String: (id: String, secret: String)]
    private let process: Process

    package init(buckets: [String] = [MotoServer.bucket, MotoServer.spareBucket]) throws {
        folder = try S3TestSupport.temporaryFolder("moto")
        let (process, ready) = try S3TestSupport.start(["moto"] + buckets.flatMap { ["--bucket", $0] }, folder: folder)
        self.process = process
        guard let port = ready["port"] as? Int, let keys = ready["keys"] as? [String: [String]] else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw S3TestError("the moto helper wrote an unexpected ready file: \(ready)")
        }
        self.port = port
        self.keys = keys.mapValues { (id: $0[0], secret: $0[1]) }
    }

    package func stop() {
        if process.isRunning {
            // Its state is thrown away: no need to ask nicely.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: folder)
    }

    deinit { stop() }

    package var endpoint: String { "http://127.0.0.1:\(port)" }

    package func credentials(_ user: String = "kho") -> S3Credentials {
        S3Credentials(accessKeyID: keys[user]!.id, secretAccessKey: keys[user]!.secret)
    }

    /// Settings for quick tests: short pauses between attempts.
    package func configuration(_ user: String = "kho", timeout: TimeInterval = 20, retries: Int = 3) -> S3Configuration {
        var configuration = S3Configuration(credentials: credentials(user))
        configuration.timeout = timeout
        configuration.retries = retries
        configuration.retryDelay = 0.05
        configuration.maximumRetryDelay = 0.5
        return configuration
    }

    /// A storage under a prefix nobody used yet, so that it starts empty.
    package func freshStorage(port: Int? = nil, bucket: String = MotoServer.bucket, configuration: S3Configuration? = nil) throws -> S3Storage {
        try S3Storage(location: "s3:http://127.0.0.1:\(port ?? self.port)/\(bucket)/t-\(UUID().uuidString.lowercased())",
                      configuration: configuration ?? self.configuration())
    }
}

/// A TCP proxy on 127.0.0.1 in front of another port; `kill()` and `start()` make the server
/// behind it vanish and return.
package final class TCPProxy: @unchecked Sendable {
    package let port: Int
    package let target: Int
    private let folder: String
    private var process: Process?

    package init(target: Int, port: Int? = nil, exitAfterBytes: Int = 0, stallFirst: Int = 0, stallSeconds: Double = 0) throws {
        self.target = target
        self.port = try port ?? S3TestSupport.freePort()
        folder = try S3TestSupport.temporaryFolder("proxy")
        try start(exitAfterBytes: exitAfterBytes, stallFirst: stallFirst, stallSeconds: stallSeconds)
    }

    /// False once the proxy was killed or left by itself (after `exitAfterBytes`).
    package var isRunning: Bool { process?.isRunning ?? false }

    /// Starts the proxy again on the same port; `exitAfterBytes` > 0 makes it die, as a server
    /// would, after passing that many bytes.
    package func start(exitAfterBytes: Int = 0, stallFirst: Int = 0, stallSeconds: Double = 0) throws {
        kill()
        var lastError: Error?
        // The old listener's port may take a moment to be free again.
        for _ in 0..<20 {
            do {
                process = try S3TestSupport.start(["proxy", "--listen", String(port), "--target", String(target),
                                                   "--exit-after-bytes", String(exitAfterBytes), "--stall-first", String(stallFirst), "--stall-seconds", String(stallSeconds)],
                                                  folder: folder, timeout: 20).0
                return
            } catch {
                lastError = error
                usleep(200_000)
            }
        }
        throw lastError!
    }

    /// SIGKILL: open connections are cut, new ones refused.
    package func kill() {
        guard let process else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// Starts one `MotoServer` for a whole suite (`MotoServer.shared`).
package struct MotoServerTrait: SuiteTrait, TestScoping {
    package var isRecursive: Bool { false }

    package func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard S3TestSupport.isAvailable else { return try await function() }
        let server = try MotoServer()
        defer { server.stop() }
        try await MotoServer.$shared.withValue(server) { try await function() }
    }
}

extension Trait where Self == MotoServerTrait {
    package static var motoServer: Self { Self() }
}

// MARK: - TLS with a private CA

/// A throwaway certificate authority made with the `openssl` command in a temporary folder, and
/// server certificates it signs.
package final class PrivateCA: @unchecked Sendable {
    package static let unavailableReason: String? = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "version"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return "openssl cannot be started: \(error)" }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? nil : "the openssl command is not installed"
    }()

    package let folder: String
    /// The CA's certificate, PEM: what `KHO_S3_CA_FILE` names.
    package let certificateFile: String
    private let keyFile: String

    package init(name: String = "kho test CA") throws {
        folder = try S3TestSupport.temporaryFolder("ca")
        certificateFile = folder + "/ca.pem"
        keyFile = folder + "/ca.key"
        try Self.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", keyFile, "-out", certificateFile, "-days", "2", "-subj", "/CN=\(name)",
                          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    }

    /// A server certificate for `names` (IP addresses and DNS names) signed by this CA: (certificate, key) files.
    package func serverCertificate(_ label: String, names: [String] = ["127.0.0.1", "localhost"]) throws -> (certificate: String, key: String) {
        let key = folder + "/\(label).key", request = folder + "/\(label).csr", certificate = folder + "/\(label).pem"
        let extensions = folder + "/\(label).ext"
        let alternativeNames = names.map { $0.first?.isNumber == true ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
        try Data("""
        subjectAltName=\(alternativeNames)
        basicConstraints=CA:FALSE
        keyUsage=critical,digitalSignature
        extendedKeyUsage=serverAuth

        """.utf8).write(to: URL(fileURLWithPath: extensions))
        try Self.openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                          "-keyout", key, "-out", request, "-subj", "/CN=\(names[0])"])
        try Self.openssl(["x509", "-req", "-in", request, "-CA", certificateFile, "-CAkey", keyFile, "-CAcreateserial",
                          "-days", "2", "-extfile", extensions, "-out", certificate])
        return (certificate, key)
    }

    package static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw S3TestError("openssl \(arguments.joined(separator: " ")) failed:\n\(text)")
        }
    }

    deinit {
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// A helper process of s3-test-server.py that listens on a port of 127.0.0.1 and counts what it
/// served in a file (connections or requests); stopped and cleaned up with its owner.
package final class CountingHelper: @unchecked Sendable {
    package let port: Int
    private let folder: String
    private let countFile: String
    private let process: Process

    package init(_ mode: String, _ arguments: [String]) throws {
        folder = try S3TestSupport.temporaryFolder(mode)
        countFile = folder + "/count.json"
        let (process, ready) = try S3TestSupport.start([mode] + arguments + ["--count", countFile], folder: folder, timeout: 30)
        self.process = process
        guard let port = ready["port"] as? Int else {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw S3TestError("the \(mode) helper wrote an unexpected ready file: \(ready)")
        }
        self.port = port
    }

    package var count: Int {
        guard let data = FileManager.default.contents(atPath: countFile) else { return 0 }
        return (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) as? Int ?? 0
    }

    deinit {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// An HTTPS front on 127.0.0.1 for a plain HTTP server (moto), with a certificate of a `PrivateCA`;
/// it counts the TCP connections it accepted.
package final class TLSFront: Sendable {
    private let helper: CountingHelper
    package var port: Int { helper.port }

    package init(target: Int, certificate: String, key: String) throws {
        helper = try CountingHelper("tls-proxy", ["--target", String(target), "--cert", certificate, "--key", key])
    }

    /// TCP connections accepted so far (each attempt of a client that tries again is one more).
    package var connections: Int { helper.count }
}

/// moto behind a TLS front whose certificate (for 127.0.0.1 and localhost) a private CA signed,
/// for a whole suite: `MotoServer.shared`, `PrivateCATLSServer.shared`.
package final class PrivateCATLSServer: @unchecked Sendable {
    @TaskLocal package static var shared: PrivateCATLSServer?

    package static func requireShared(sourceLocation: SourceLocation = #_sourceLocation) throws -> PrivateCATLSServer {
        try #require(shared, "this suite needs the .privateCATLSServer trait", sourceLocation: sourceLocation)
    }

    package static var unavailableReason: String? { S3TestSupport.unavailableReason ?? PrivateCA.unavailableReason }

    package let ca: PrivateCA
    package let front: TLSFront
    package let moto: MotoServer

    package init(moto: MotoServer) throws {
        self.moto = moto
        ca = try PrivateCA()
        let (certificate, key) = try ca.serverCertificate("server")
        front = try TLSFront(target: moto.port, certificate: certificate, key: key)
    }

    /// The environment kho reads: moto's `kho` key, and `KHO_S3_CA_FILE` unless `caFile` is nil.
    package func environment(caFile: String?) -> [String: String] {
        var environment = ["AWS_ACCESS_KEY_ID": moto.keys["kho"]!.id, "AWS_SECRET_ACCESS_KEY": moto.keys["kho"]!.secret]
        if let caFile { environment["KHO_S3_CA_FILE"] = caFile }
        return environment
    }

    /// Settings as kho makes them from `environment(caFile:)`, with quick pauses between attempts.
    package func configuration(caFile: String?, retries: Int = 3) throws -> S3Configuration {
        var configuration = try S3Configuration.fromEnvironment(environment(caFile: caFile))
        configuration.timeout = 20
        configuration.retries = retries
        configuration.retryDelay = 0.05
        configuration.maximumRetryDelay = 0.5
        return configuration
    }

    /// A storage over https under a prefix nobody used yet.
    package func freshStorage(host: String = "127.0.0.1", port: Int? = nil, configuration: S3Configuration) throws -> S3Storage {
        try S3Storage(location: "s3:https://\(host):\(port ?? front.port)/\(MotoServer.bucket)/tls-\(UUID().uuidString.lowercased())",
                      configuration: configuration)
    }
}

package struct PrivateCATLSServerTrait: SuiteTrait, TestScoping {
    package var isRecursive: Bool { false }

    package func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard PrivateCATLSServer.unavailableReason == nil else { return try await function() }
        let moto = try MotoServer()
        defer { moto.stop() }
        let server = try PrivateCATLSServer(moto: moto)
        try await MotoServer.$shared.withValue(moto) {
            try await PrivateCATLSServer.$shared.withValue(server) { try await function() }
        }
    }
}

extension Trait where Self == PrivateCATLSServerTrait {
    package static var privateCATLSServer: Self { Self() }
}

/// An HTTP server on 127.0.0.1 that gives every request the same answer (a status, an S3 error
/// code, a Location), and counts the requests.
package final class FixedAnswerServer: Sendable {
    private let helper: CountingHelper
    package var port: Int { helper.port }

    package init(status: Int, code: String? = nil, location: String? = nil) throws {
        var arguments = ["--status", String(status)]
        if let code { arguments += ["--code", code] }
        if let location { arguments += ["--location", location] }
        helper = try CountingHelper("answer", arguments)
    }

    /// Requests answered so far.
    package var requests: Int { helper.count }
}
