import KhoCatalog
import KhoSupport

/// How a set of drills came out, for `kho verify`.
public enum DrillVerdict {
    /// Damaged when a counted check found wrong data (the restore, the engine's checks, the files
    /// or the manifest: exit 12); incomplete when only the RTO was missed, a drill could not run,
    /// or a drill did not pass for another reason (exit 1); success when every drill passed. A
    /// check the policy does not count never changes the verdict.
    public static func of(_ drills: [DrillEvidence], couldNotRun: Bool) -> Verdict {
        if drills.contains(where: \.foundBadData) { return .damaged }
        if couldNotRun || drills.contains(where: { !$0.passed }) { return .incomplete }
        return .success
    }
}
