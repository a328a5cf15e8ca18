import Foundation
import Glibc
import KhoSupport
import Testing

@Suite("Subprocess")
struct SubprocessTests {
    func readAll(_ child: Subprocess) throws -> String {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try child.read($0) }
            if n == 0 { break }
            out += buffer[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("arguments stay words, the environment is exactly the one given, stdin is fed, stdout streamed, the exit status kept")
    func roundTrip() throws {
        let child = try Subprocess(program: "/bin/sh", arguments: ["-c", "printf '%s|' \"$0\" \"$ONLY\"; env | wc -l; cat; exit 3", "a b; echo no"],
                                   environment: ["ONLY": "x y", "PATH": "/usr/bin:/bin"], input: .pipe, output: .pipe)
        try Array("fed through stdin".utf8).withUnsafeBytes { try child.write($0) }
        child.closeInput()
        let out = try readAll(child)
        #expect(child.wait() == .exited(3))
        // sh adds PWD (and SHLVL, _) of its own: ONLY and PATH are the only ones kho gave.
        #expect(out.hasPrefix("a b; echo no|x y|"), "\(out)")
        #expect(out.hasSuffix("fed through stdin"), "\(out)")
    }

    @Test("standard error is kept up to its limit (the end), a signal is reported as a signal, a missing program cannot start")
    func failures() throws {
        let noisy = try Subprocess(program: "/bin/sh", arguments: ["-c", "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done"],
                                   environment: [:], stderrLimit: 100)
        #expect(noisy.wait().succeeded)
        #expect(noisy.standardError.utf8.count == 100)
        #expect(noisy.standardError.hasSuffix("line 1999\n"))

        let sleeper = try Subprocess(program: "/bin/sleep", arguments: ["30"], environment: [:])
        #expect(!sleeper.hasEnded)
        sleeper.signal(SIGKILL)
        #expect(sleeper.wait() == .signalled(SIGKILL))
        #expect(sleeper.hasEnded)

        #expect(throws: KhoError.self) { try Subprocess(program: "/nonexistent/tool", arguments: [], environment: [:]) }
    }
}
