import Foundation
import KhoCore
import KhoSupport

/// The environment of the programs kho starts. kho's own environment holds the repository
/// password (KHO_PASSWORD …), cloud keys (AWS_…) and database passwords; a dump command, a database
/// client or a notify command gets none of them: only what locates programs and sets the language,
/// plus, for one child, the engine's own password variable.
public enum ChildEnvironment {
    private static let kept: Set<String> = ["PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "USER", "LOGNAME"]
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// PATH, the language and time zone, HOME, TMPDIR and the user name from kho's environment,
    /// then `extra`.
    public static func minimal(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { key, _ in kept.contains(key) || key.hasPrefix("LC_") }
        if env["PATH"] == nil { env["PATH"] = defaultPath }
        for (key, value) in extra { env[key] = value }
        return env
    }

    /// `minimal` plus the administrator's libpq settings (PGSSLMODE, PGSERVICEFILE …) for a
    /// production server, except a password: kho gives PGPASSWORD itself, to that child only.
    public static func postgres(_ extra: [String: String] = [:]) -> [String: String] {
        var env = minimal()
        for (key, value) in ProcessInfo.processInfo.environment where key.hasPrefix("PG") && key != "PGPASSWORD" { env[key] = value }
        for (key, value) in extra { env[key] = value }
        return env
    }
}

/// Database passwords in kho's own environment. The client libraries linked into kho (libpq) take
/// PGPASSWORD from the process's environment for any connection that names no password, so an
/// administrator's PGPASSWORD, set for their own psql, would log kho into whatever server a policy
/// names — the password a policy did not give. kho takes such variables out of its environment at
/// start; a policy that names one with `password-env:` still gets its value (`value(_:)`).
public enum ClientPasswords {
    static let names = ["PGPASSWORD"]
    private static let withheld = Locked<[String: String]>([:])

    /// Takes the variables out of the environment. Call first thing in `main`, while kho has one
    /// thread: unsetenv is not safe beside threads reading the environment.
    public static func withhold() {
        Secrets.readEnvironment()
        for name in names {
            guard let value = getenv(name) else { continue }
            withheld.withLock { $0[name] = String(cString: value) }
            unsetenv(name)
        }
    }

    /// The variable's value: from the environment, or as it was before `withhold`.
    public static func value(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name] ?? withheld.withLock { $0[name] }
    }
}

/// Values kho must never print or record: passwords it read, secrets in its environment, and
/// values a policy takes from the environment with `${VAR}`. Whatever kho shows of a command it
/// runs, the command's error output, and the messages it prints or keeps in the catalog go
/// through `mask`, which writes `***` for each.
public enum Secrets {
    /// Secrets proper: masked in every message.
    private static let values = Locked<Set<String>>([])
    /// Values a policy took from the environment: masked wherever a command is shown (a command
    /// line is where a variable keeps a token out of the policy file), not in other messages, where
    /// a path or port from a variable is what the reader needs.
    private static let expanded = Locked<Set<String>>([])
    /// Shorter values are not masked: "***" in place of every "ab" would make messages unreadable
    /// and hide nothing worth hiding.
    static let minimumLength = 4

    /// Whether a variable's name says it holds a secret (KHO_PASSWORD, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, MYSQL_PWD, DB_PASS …); names of files and folders (…_FILE, …_DIR) are not.
    public static func isSecretName(_ name: String) -> Bool {
        let upper = name.uppercased()
        if upper == "PWD" || upper == "OLDPWD" { return false }
        if upper.hasSuffix("_FILE") || upper.hasSuffix("_DIR") || upper.hasSuffix("_PATH") { return false }
        return ["PASS", "PWD", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE", "KEY", "AUTH", "COOKIE"].contains { upper.contains($0) }
    }

    /// Whether a value is worth masking: long enough, and not a switch such as `true` (a
    /// FEATURE_KEY=true in the environment must not turn every "true" in a message into ***).
    static func maskable(_ value: String) -> Bool {
        value.count >= minimumLength && !["true", "false", "none", "null", "unset", "empty", "disabled", "enabled"].contains(value.lowercased())
    }

    /// Reads the environment's secrets now, before `ClientPasswords.withhold` takes some of them
    /// out of the environment (they stay masked).
    static func readEnvironment() { _ = environmentSecrets }

    /// The environment's secrets, read once.
    private static let environmentSecrets: Set<String> = {
        Set(ProcessInfo.processInfo.environment.filter { isSecretName($0.key) && maskable($0.value) }.map(\.value))
    }()

    /// A password or key kho read (from a file or a variable).
    public static func register(_ value: String) {
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        guard maskable(trimmed) else { return }
        values.withLock { _ = $0.insert(trimmed) }
    }

    /// A value a policy took from the variable `name`.
    public static func registerExpanded(_ value: String, name: String) {
        guard maskable(value) else { return }
        if isSecretName(name) { values.withLock { _ = $0.insert(value) } }
        expanded.withLock { _ = $0.insert(value) }
    }

    /// `text` with every secret replaced by `***`.
    public static func mask(_ text: String) -> String {
        replace(text, values.current.union(environmentSecrets))
    }

    /// `text` (a command, or what it printed) with every secret and every value a policy took
    /// from the environment replaced by `***`.
    public static func maskCommand(_ text: String) -> String {
        replace(text, values.current.union(environmentSecrets).union(expanded.current))
    }

    private static func replace(_ text: String, _ secrets: Set<String>) -> String {
        var text = text
        // Longest first: a secret that contains another is masked whole.
        for secret in secrets.sorted(by: { $0.count > $1.count }) where text.contains(secret) {
            text = text.replacingOccurrences(of: secret, with: "***")
        }
        return text
    }
}
