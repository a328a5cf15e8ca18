import Foundation
import Glibc
import KhoCore
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

enum S3TestSupport {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static let helper = packageRoot + "/scripts/lib/s3-test-server.py"

    static let unavailableReason: String? = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import moto.server, boto3"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return "python3 cannot be started: \(error)" }
        process.waitUntilExit()
        return process.terminationStatus == 0 ? nil : "moto[server] is not installed (python3 -m pip install 'moto[server]')"
    }()

    static var isAvailable: Bool { unavailableReason == nil }

    static func temporaryFolder(_ label: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kho-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Starts the helper and waits for it to write its ready file.
    static func start(_ arguments: [String], folder: String, timeout: Double = 90) throws -> (Process, [String: Any]) {
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
    static func freePort() throws -> Int {
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

struct S3TestError: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }
}

/// moto's S3 server on a free loopback port, with authentication on.
final class MotoServer: @unchecked Sendable {
    static let bucket = "kho-test"
    /// A bucket that exists for tests that need one of their own.
    static let spareBucket = "kho-spare"

    @TaskLocal static var shared: MotoServer?

    static func requireShared(sourceLocation: SourceLocation = #_sourceLocation) throws -> MotoServer {
        try #require(shared, "this suite needs the .motoServer trait", sourceLocation: sourceLocation)
    }

    let folder: String
    let port: Int
    /// User name → (access key ID, secret).
    let keys: [String: (id: String, secret: String)]
    private let process: Process

    init() throws {
        folder = try S3TestSupport.temporaryFolder("moto")
        let (process, ready) = try S3TestSupport.start(["moto", "--bucket", MotoServer.bucket, "--bucket", MotoServer.spareBucket], folder: folder)
        self.process = process
        guard let port = ready["port"] as? Int, let keys = ready["keys"] as? [String: [String]] else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw S3TestError("the moto helper wrote an unexpected ready file: \(ready)")
        }
        self.port = port
        self.keys = keys.mapValues { (id: $0[0], secret: $0[1]) }
    }

    func stop() {
        if process.isRunning {
            // Its state is thrown away: no need to ask nicely.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: folder)
    }

    deinit { stop() }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    func credentials(_ user: String = "kho") -> S3Credentials {
        S3Credentials(accessKeyID: keys[user]!.id, secretAccessKey: keys[user]!.secret)
    }

    /// Settings for quick tests: short pauses between attempts.
    func configuration(_ user: String = "kho", timeout: TimeInterval = 20, retries: Int = 3) -> S3Configuration {
        var configuration = S3Configuration(credentials: credentials(user))
        configuration.timeout = timeout
        configuration.retries = retries
        configuration.retryDelay = 0.05
        configuration.maximumRetryDelay = 0.5
        return configuration
    }

    /// A storage under a prefix nobody used yet, so that it starts empty.
    func freshStorage(port: Int? = nil, bucket: String = MotoServer.bucket, configuration: S3Configuration? = nil) throws -> S3Storage {
        try S3Storage(location: "s3:http://127.0.0.1:\(port ?? self.port)/\(bucket)/t-\(UUID().uuidString.lowercased())",
                      configuration: configuration ?? self.configuration())
    }
}

/// A TCP proxy on 127.0.0.1 in front of another port; `kill()` and `start()` make the server
/// behind it vanish and return.
final class TCPProxy: @unchecked Sendable {
    let port: Int
    let target: Int
    private let folder: String
    private var process: Process?

    init(target: Int, port: Int? = nil, stallFirst: Int = 0, stallSeconds: Double = 0) throws {
        self.target = target
        self.port = try port ?? S3TestSupport.freePort()
        folder = try S3TestSupport.temporaryFolder("proxy")
        try start(stallFirst: stallFirst, stallSeconds: stallSeconds)
    }

    func start(stallFirst: Int = 0, stallSeconds: Double = 0) throws {
        precondition(process == nil)
        var lastError: Error?
        // The old listener's port may take a moment to be free again.
        for _ in 0..<20 {
            do {
                process = try S3TestSupport.start(["proxy", "--listen", String(port), "--target", String(target),
                                                   "--stall-first", String(stallFirst), "--stall-seconds", String(stallSeconds)],
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
    func kill() {
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
struct MotoServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard S3TestSupport.isAvailable else { return try await function() }
        let server = try MotoServer()
        defer { server.stop() }
        try await MotoServer.$shared.withValue(server) { try await function() }
    }
}

extension Trait where Self == MotoServerTrait {
    static var motoServer: Self { Self() }
}
