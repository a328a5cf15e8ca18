import Foundation
import Glibc
import KhoCore
import KhoSupport

/// Runs a database client and writes a dump into its standard input. `environment` is the
/// client's whole environment (see `ChildEnvironment`).
enum ClientFeeder {
    static func feed(program: String, arguments: [String], environment: [String: String], engine: String, sourceName: String,
                     produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.environment = environment
        let input = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let stderrText = Locked<[UInt8]>([])
        let errorFD = errors.fileHandleForReading.fileDescriptor
        let reader = Worker(name: "kho-client-stderr") {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(errorFD, $0.baseAddress, 8192) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                stderrText.withLock { if $0.count < 65536 { $0.append(contentsOf: buffer[0..<n]) } }
            }
        }
        let fd = input.fileHandleForWriting.fileDescriptor
        var written: Int64 = 0
        var writeError: Error?
        do {
            try produce { chunk in
                try Syscall.writeAll(fd, chunk, "the \(engine) client")
                written += Int64(chunk.count)
            }
        } catch {
            writeError = error
        }
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        reader.join()
        let text = Secrets.mask(String(decoding: stderrText.current, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        if process.terminationStatus != 0 || process.terminationReason != .exit {
            if text.isEmpty, let writeError { throw writeError }
            let first = text.split(separator: "\n").prefix(3).joined(separator: " | ")
            throw KhoError(.source, "Source \(sourceName): loading the dump failed (\(engine) client exited with status \(process.terminationStatus): \(first)); the target was left as it was before.")
        }
        if let writeError { throw writeError }
        return written
    }
}
