import Foundation
import Glibc
import KhoSupport
@testable import KhoSources
import Testing

/// The archive_command `kho wal setup` prints is shell text inside a postgresql.conf string: a
/// source name or path with quotes or spaces must come out of both unchanged.
@Suite struct WALSetupQuotingTests {
    @Test(arguments: ["db1", "kế toán", "it's", "a\"b", "$(touch /tmp/x)", "`x`", "semi;colon", "new\\line", "/opt/kho 2/bin/kho"])
    func shellQuotingGivesBackTheText(_ text: String) throws {
        let quoted = Shell.quote(text)
        let child = try Subprocess(program: "/bin/sh", arguments: ["-c", "printf %s " + quoted], environment: [:], output: .pipe)
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try child.read($0) }
            if n == 0 { break }
            out += buffer[0..<n]
        }
        _ = try child.wait()
        #expect(String(decoding: out, as: UTF8.self) == text, "\(quoted)")
    }

    @Test func confQuotingDoublesQuotes() {
        #expect(WALSetup.confQuote("set -a && . 'a b' && exec kho") == "'set -a && . ''a b'' && exec kho'")
        #expect(Shell.quote("/usr/bin/kho") == "/usr/bin/kho")
        #expect(WALSetup.argument("db%p") == "'db%%p'", "PostgreSQL would put the file's path in place of %p")
    }
}
