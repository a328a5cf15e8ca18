import Foundation

/// Where a repository password comes from, in kho's one order: a file (`PREFIX_FILE`), a command
/// (`PREFIX_COMMAND`), the variable itself (`PREFIX`). Never a flag: flags show in `ps`. Prefixes
/// are KHO_PASSWORD (the repository), KHO_FROM_PASSWORD (the other repository of copy, rekey and
/// init --copy-chunker-params-from) and KHO_NEW_PASSWORD (a key being added).
public enum PasswordSource {
    /// The password the environment names, or nil when none of the three is set (a terminal
    /// may then ask). A trailing newline of a file or a command's output is not part of it.
    public static func read(prefix: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [UInt8]? {
        if let file = environment["\(prefix)_FILE"], !file.isEmpty {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw KhoError(.usage, "Cannot read the password file \(file) named by \(prefix)_FILE: check the path and its permissions.")
            }
            return trimNewline(Array(data))
        }
        if let command = environment["\(prefix)_COMMAND"], !command.isEmpty {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", command]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw KhoError(.usage, "The password command in \(prefix)_COMMAND exited with status \(process.terminationStatus): fix the command.")
            }
            return trimNewline(Array(data))
        }
        if let value = environment[prefix] {
            return Array(value.utf8)
        }
        return nil
    }

    /// The error when no password is set and there is no terminal to ask on.
    public static func missing(purpose: String, prefix: String) -> KhoError {
        KhoError(.usage, "No \(purpose) given: set \(prefix)_FILE, \(prefix)_COMMAND or \(prefix).")
    }

    static func trimNewline(_ bytes: [UInt8]) -> [UInt8] {
        var bytes = bytes
        while let last = bytes.last, last == 0x0a || last == 0x0d { bytes.removeLast() }
        return bytes
    }
}
