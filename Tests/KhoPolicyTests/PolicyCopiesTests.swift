import Foundation
import KhoCore
import KhoPolicy
import Testing

// `copies:` in policy files: read as written, and its mistakes located by file, line and column.

extension KhoPolicyUnitTests {
@Suite("policy copies")
struct PolicyCopiesTests {
    /// A valid policy with `copies` (lines 7 to 11) followed by `extra` lines inside the last entry.
    private func policy(passwordFile: String, copies: String) -> String {
        """
        name: ban-sao
        agency: Sở Tư pháp
        system: Hộ tịch
        security-level: 3
        schedule: "30 1 * * *"
        repository:
          path: /srv/kho/repository
          password-file: \(passwordFile)
        \(copies)
        sources:
          - name: scans
            kind: files
            paths: [/srv/scans]
        objectives:
          rpo: 24h
          rto: 4h

        """
    }

    private func load(_ text: String, in folder: TemporaryFolder) throws -> (Policy?, [String]) {
        let file = try folder.write("ban-sao.yaml", text)
        let (policy, errors) = PolicyLoader().load(file: file)
        return (policy, errors.map { $0.description.replacingOccurrences(of: folder.path + "/", with: "") })
    }

    @Test("copies are read in order, with their password file or variable")
    func readsCopies() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: \(password)
              - path: s3:http://127.0.0.1:9000/kho
                password-env: KHO_COPY_PASSWORD
            """), in: folder)
        #expect(errors.isEmpty, "\(errors)")
        let copies = try #require(policy?.copies)
        #expect(copies.map(\.path) == ["/mnt/second-site", "s3:http://127.0.0.1:9000/kho"])
        #expect(copies.map(\.passwordFile) == [password, nil])
        #expect(copies.map(\.passwordEnv) == [nil, "KHO_COPY_PASSWORD"])
    }

    @Test("a policy without copies has none")
    func noCopies() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: ""), in: folder)
        #expect(errors.isEmpty, "\(errors)")
        #expect(policy?.copies.isEmpty == true)
    }

    @Test("an unknown key in a copies entry is reported at file:line:column, with the closest key")
    func unknownKey() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let (policy, errors) = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                pasword-file: \(password)
            """), in: folder)
        #expect(policy == nil)
        #expect(errors == [
            "ban-sao.yaml:11:5: unknown key \"pasword-file\" in a copies entry (did you mean \"password-file\"?); expected one of: path, password-file, password-env, retention, prune",
            "ban-sao.yaml:10:5: copy needs password-file or password-env (a password is never written in a policy)",
        ], "\(errors)")
    }

    @Test("copies mistakes: not a list, no path, the policy's own repository, twice, a missing password file")
    func mistakes() throws {
        let folder = try TemporaryFolder("copies")
        let password = try folder.write("repository.pass", "secret\n")
        let notAList = try load(policy(passwordFile: password, copies: "copies: /mnt/second-site"), in: folder).1
        #expect(notAList == ["ban-sao.yaml:9:9: copies must be a non-empty list of repositories, each with path and password-file or password-env"], "\(notAList)")

        let noPath = try load(policy(passwordFile: password, copies: """
            copies:
              - password-env: KHO_COPY_PASSWORD
            """), in: folder).1
        #expect(noPath == ["ban-sao.yaml:10:5: copies path is missing"], "\(noPath)")

        let own = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /srv/kho/repository
                password-env: KHO_COPY_PASSWORD
            """), in: folder).1
        #expect(own == ["ban-sao.yaml:10:11: copies path /srv/kho/repository is the policy's own repository: copy to another one"], "\(own)")

        let twice = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-env: KHO_COPY_PASSWORD
              - path: /mnt/second-site
                password-env: KHO_COPY_PASSWORD
            """), in: folder).1
        #expect(twice == ["ban-sao.yaml:12:11: copies path /mnt/second-site is listed twice"], "\(twice)")

        let missing = try load(policy(passwordFile: password, copies: """
            copies:
              - path: /mnt/second-site
                password-file: /nonexistent/copy.pass
            """), in: folder).1
        #expect(missing == ["ban-sao.yaml:11:20: copy password-file /nonexistent/copy.pass does not exist or cannot be read"], "\(missing)")
    }
}
}
