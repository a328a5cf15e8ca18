import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport

/// A private scratch cluster recovered to a point in time (docs/design/pitr.md sections 6 and 8):
/// the plan's base backup restored into a scratch folder, kho's own configuration in place of the
/// backup's (`PITRScratchConfiguration`: private socket, no TCP, peer map, archive_mode off, no
/// preloaded libraries), recovered through this process's WAL fetch server and promoted. The PITR
/// drill checks it; `kho restore --pitr --database` carries one database of it over. The caller
/// tears it down (`scratch.tearDown()`); an interruption does through `ScratchRegistry`.
public struct ScratchRecovery {
    public let scratch: ScratchPostgres
    public let recovered: PointInTimeRestore.Recovered
    /// From `began` to the files in place, and from then to promotion.
    public let filesSeconds: Double
    public let recoverySeconds: Double

    /// `recoveryBegins` is called once the files are in place and the server is about to start:
    /// an error after it is a recovery that failed, not a restore that could not begin.
    public init(repository: Repository, plan: PointInTimePlan, began: Date, timeout: TimeInterval = 7200,
                progress: ProgressCounter = ProgressCounter(), recoveryBegins: () -> Void = {}) throws {
        let bin = "/usr/lib/postgresql/\(plan.manifest.majorVersion)/bin"
        guard access(bin + "/pg_ctl", X_OK) == 0 else {
            throw KhoError(.failure, "Base backup \(plan.base.shortID) is of PostgreSQL \(plan.manifest.majorVersion), whose server programs (\(bin)) are not installed here: install postgresql-\(plan.manifest.majorVersion) to recover it.")
        }
        var recovered: PointInTimeRestore.Recovered?
        var filesDone = began, recoveryDone = began
        scratch = try ScratchPostgres(recovering: bin, superuser: plan.manifest.superuser) { folder, owner in
            // Restored as root in a folder of root's (the restorer refuses a path another user
            // could change under it), then moved into the server's folder whole.
            let restoreFolder = try ScratchFolder()
            defer { restoreFolder.tearDown() }
            let staging = restoreFolder.directory + "/restore"
            let warnings = Locked<[String]>([])
            do {
                _ = try PointInTimeRestore.restoreFiles(repository: repository, plan: plan, into: staging, owner: owner, progress: progress) { message in
                    warnings.withLock { if $0.count < 20 { $0.append(message) } }
                }
            } catch let error as KhoError where error.kind == .integrity {
                // What the restorer warned about is the evidence: a damaged pack, a missing blob.
                throw KhoError(.integrity, ([error.message] + warnings.current).joined(separator: "\n"))
            }
            let data = folder + "/data"
            try DataDirectoryTarget.place(staging + "/data", at: data, owner: owner)
            try PITRScratchConfiguration.replace(in: data, socketFolder: folder, superuser: plan.manifest.superuser,
                                                 settings: plan.manifest.settings, owner: owner)
            filesDone = Date()
            recoveryBegins()
            recovered = try PointInTimeRestore.recover(repository: repository, plan: plan, dataDirectory: data, socketFolder: folder, owner: owner,
                                                       port: nil, keepArchiving: false, timeout: timeout, logFile: folder + "/recovery.log")
            recoveryDone = Date()
        }
        guard let recovered else {
            scratch.tearDown()
            throw KhoError(.failure, "The recovered cluster was not started: report this as a bug.")
        }
        self.recovered = recovered
        filesSeconds = filesDone.timeIntervalSince(began)
        recoverySeconds = recoveryDone.timeIntervalSince(filesDone)
    }
}
