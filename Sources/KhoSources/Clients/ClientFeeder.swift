import Foundation
import KhoCore
import KhoSupport

/// Runs a database client and writes a dump into its standard input. `environment` is the
/// client's whole environment (see `ChildEnvironment`).
enum ClientFeeder {
    static func feed(program: String, arguments: [String], environment: [String: String], engine: String, sourceName: String,
                     produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        let child = try Subprocess(program: program, arguments: arguments, environment: environment, input: .pipe)
        var written: Int64 = 0
        var writeError: Error?
        do {
            try produce { chunk in
                try child.write(chunk)
                written += Int64(chunk.count)
            }
        } catch {
            writeError = error
        }
        let termination = child.wait()
        let text = Secrets.mask(child.standardError.trimmingCharacters(in: .whitespacesAndNewlines))
        if !termination.succeeded {
            if text.isEmpty, let writeError { throw writeError }
            let first = text.split(separator: "\n").prefix(3).joined(separator: " | ")
            let status: String
            switch termination {
            case .exited(let code): status = "exited with status \(code)"
            case .signalled(let signal): status = "was killed by signal \(signal)"
            }
            throw KhoError(.source, "Source \(sourceName): loading the dump failed (\(engine) client \(status): \(first)); the target was left as it was before.")
        }
        if let writeError { throw writeError }
        return written
    }
}
