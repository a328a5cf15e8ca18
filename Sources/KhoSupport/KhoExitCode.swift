/// kho's exit codes, the contract with scripts and schedulers (documented in `kho --help` and the
/// README). Every command leaves through this one map: an error's kind decides its code, and a
/// command that finished with a verdict short of success names the code it ends with.
public enum KhoExitCode: Int32, Sendable, CaseIterable {
    case success = 0
    case failure = 1
    case usage = 2
    /// Some files or tables could not be read; the snapshot holds the rest.
    case partial = 3
    case locked = 10
    case wrongPassword = 11
    case integrity = 12
    /// Only `kho wal fetch` (PostgreSQL's restore_command): above 125, PostgreSQL stops recovery
    /// instead of reading the failure as "no such file" and ending it early at the wrong point.
    case recoveryMustStop = 126

    public init(_ kind: KhoError.Kind) {
        switch kind {
        case .usage: self = .usage
        case .locked: self = .locked
        case .wrongPassword: self = .wrongPassword
        case .integrity: self = .integrity
        case .failure, .notARepository, .storageFull, .source, .sourceShrank, .storage, .interrupted: self = .failure
        }
    }
}
