import KhoCatalog
import KhoSupport

/// How `kho verify` ends after its drills.
public enum DrillVerdict {
    /// 12 when a counted check found wrong data (the restore, the engine's checks, the files or the
    /// manifest); 1 when only the RTO was missed, a drill could not run, or a drill did not pass
    /// for another reason; 0 when every drill passed. A check the policy does not count never
    /// changes the code.
    public static func exitCode(_ drills: [DrillEvidence], couldNotRun: Bool) -> KhoExitCode {
        if drills.contains(where: \.foundBadData) { return .integrity }
        if couldNotRun || drills.contains(where: { !$0.passed }) { return .failure }
        return .success
    }
}
