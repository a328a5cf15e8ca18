import Foundation
import Testing
import KhoSupport

// The password order: a file, then a command, then the variable; nil when none is set, so that
// only then a terminal may ask.

@Suite struct PasswordSourceTests {
    private func scratchFile(_ contents: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kho-password-\(UUID().uuidString)").path
        try Data(contents.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("a file wins over a command and the variable; its trailing newline is not part of the password")
    func fileFirst() throws {
        let file = try scratchFile("from the file\r\n")
        defer { unlink(file) }
        let env = ["KHO_PASSWORD_FILE": file, "KHO_PASSWORD_COMMAND": "echo from the command", "KHO_PASSWORD": "from the variable"]
        #expect(try PasswordSource.read(prefix: "KHO_PASSWORD", environment: env) == Array("from the file".utf8))
    }

    @Test("a command comes before the variable; a command that fails is a usage error")
    func commandSecond() throws {
        let env = ["KHO_FROM_PASSWORD_COMMAND": "printf 'from the command\\n'", "KHO_FROM_PASSWORD": "from the variable"]
        #expect(try PasswordSource.read(prefix: "KHO_FROM_PASSWORD", environment: env) == Array("from the command".utf8))
        let error = #expect(throws: KhoError.self) {
            try PasswordSource.read(prefix: "KHO_PASSWORD", environment: ["KHO_PASSWORD_COMMAND": "exit 3"])
        }
        #expect(error?.kind == .usage && error?.message.contains("exited with status 3") == true, "\(String(describing: error))")
    }

    @Test("the variable is taken as it is; empty settings are skipped; nothing set gives nil")
    func variableLast() throws {
        #expect(try PasswordSource.read(prefix: "KHO_PASSWORD", environment: ["KHO_PASSWORD_FILE": "", "KHO_PASSWORD": " spaced \n"])
                == Array(" spaced \n".utf8))
        #expect(try PasswordSource.read(prefix: "KHO_PASSWORD", environment: ["KHO_NEW_PASSWORD": "other prefix"]) == nil)
    }

    @Test("an unreadable file is a usage error naming the variable")
    func unreadableFile() {
        let error = #expect(throws: KhoError.self) {
            try PasswordSource.read(prefix: "KHO_NEW_PASSWORD", environment: ["KHO_NEW_PASSWORD_FILE": "/nonexistent/kho-password"])
        }
        #expect(error?.kind == .usage && error?.message.contains("KHO_NEW_PASSWORD_FILE") == true)
        #expect(PasswordSource.missing(purpose: "new password", prefix: "KHO_NEW_PASSWORD").message
                == "No new password given: set KHO_NEW_PASSWORD_FILE, KHO_NEW_PASSWORD_COMMAND or KHO_NEW_PASSWORD.")
    }
}
