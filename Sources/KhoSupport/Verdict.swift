/// How a command that ran to its end came out. A command returns its library result's verdict and
/// `KhoExitCode(verdict)` — the one map — decides the exit code; no command picks a number itself.
public enum Verdict: Sendable, Equatable {
    case success
    /// A snapshot was written, but some files or tables could not be read.
    case partial
    /// Data is damaged or missing, or a restore differs from what the snapshot recorded.
    case damaged
    /// The command finished without reaching its goal (e.g. a rekey that is not safe to retire).
    case incomplete

    /// The worse of two verdicts, for a command that reaches more than one.
    public func worst(_ other: Verdict) -> Verdict {
        let order: [Verdict] = [.success, .partial, .incomplete, .damaged]
        return order.firstIndex(of: self)! >= order.firstIndex(of: other)! ? self : other
    }
}

extension KhoExitCode {
    public init(_ verdict: Verdict) {
        switch verdict {
        case .success: self = .success
        case .partial: self = .partial
        case .damaged: self = .integrity
        case .incomplete: self = .failure
        }
    }
}
