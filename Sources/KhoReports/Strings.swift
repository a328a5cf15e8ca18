import Foundation
import KhoSources
import KhoCatalog

public enum ReportLanguage: String, CaseIterable, Sendable, Codable {
    case vi, en
}

/// One label in both languages. Every label of every format comes from here, so that a report
/// never mixes languages (except what the catalog itself holds: error messages, check output).
public struct Text: Sendable {
    public let vi: String
    public let en: String
    public init(_ vi: String, _ en: String) {
        self.vi = vi
        self.en = en
    }
    public func callAsFunction(_ language: ReportLanguage) -> String { language == .vi ? vi : en }
}

/// The string table.
enum L {
    static let title = Text("Báo cáo kiểm tra sao lưu và khôi phục dữ liệu", "Backup and recovery compliance report")
    static let motto = Text("đúng - đủ - sạch - sống", "correct - complete - clean - live")
    static let period = Text("Kỳ báo cáo", "Reporting period")
    static let from = Text("từ", "from")
    static let to = Text("đến", "to")
    static let timeZone = Text("múi giờ", "time zone")
    static let scope = Text("Phạm vi", "Scope")
    static let scopeAll = Text("toàn bộ chính sách", "every policy")
    static let scopePolicy = Text("chính sách", "policy")
    static let generatedAt = Text("Lập lúc", "Generated at")
    static let khoVersion = Text("Phiên bản kho", "kho version")
    static let host = Text("Máy lập báo cáo", "Host")
    static let dataHash = Text("SHA-256 của dữ liệu", "SHA-256 of the data")
    static let checkHint = Text("Đối chiếu bản này với sổ ghi của kho: kho report --check <tệp>",
                                "Check this copy against kho's catalog: kho report --check FILE")

    static let walSection = Text("Bảo vệ liên tục (WAL PostgreSQL)", "Continuous protection (PostgreSQL WAL)")
    static let walNote = Text("Đánh giá tại cuối kỳ theo những gì kho lưu trữ đang giữ. RPO đạt được: thời gian từ tệp WAL mới nhất đến cuối kỳ; RPO xấu nhất: khoảng dài nhất trong kỳ không có tệp WAL mới (giới hạn trên: máy chủ nhàn rỗi không ghi WAL).",
                              "Judged at the period's end from what the repository holds. Achieved RPO: from the newest WAL segment to the period's end; worst RPO: the longest time in the period without a new segment (an upper bound: an idle server writes no WAL).")
    static let walCluster = Text("Cụm", "Cluster")
    static let walNewest = Text("Tệp WAL mới nhất", "Newest segment")
    static let walAchievedRpo = Text("RPO đạt được", "Achieved RPO")
    static let walWorstRpo = Text("RPO xấu nhất", "Worst RPO")
    static let walSegments = Text("Tệp trong kỳ", "Segments in period")
    static let walWindow = Text("Khoảng khôi phục", "Recovery window")
    static let walGaps = Text("Chỗ hổng", "Gaps")
    static let binlogSection = Text("Bảo vệ liên tục (nhật ký nhị phân MariaDB)", "Continuous protection (MariaDB binary log)")
    static let binlogNote = Text("Đánh giá tại cuối kỳ theo những gì kho lưu trữ đang giữ. RPO đạt được: thời gian từ phần nhật ký nhị phân mới nhất được lưu đến cuối kỳ, so với RPO mục tiêu (wal-rpo) của nguồn; đạt khi không vượt mục tiêu và không có chỗ hổng. RPO xấu nhất: khoảng dài nhất trong kỳ không có phần mới (giới hạn trên: máy chủ nhàn rỗi không ghi nhật ký).",
                                 "Judged at the period's end from what the repository holds. Achieved RPO: from the newest stored binary log piece to the period's end, against the source's RPO target (wal-rpo); met when within it and without gaps. Worst RPO: the longest time in the period without a new piece (an upper bound: an idle server logs nothing).")
    static let binlogServer = Text("Máy chủ (server_id)", "Server (server_id)")
    static let binlogNewest = Text("Tệp nhật ký mới nhất", "Newest file")
    static let binlogTarget = Text("RPO mục tiêu", "RPO target")
    static let binlogPieces = Text("Phần trong kỳ", "Pieces in period")
    static let walNoWindow = Text("không có (chưa có bản sao lưu nền)", "none (no base backup)")

    static let provinceSummary = Text("Tổng hợp toàn tỉnh", "Province summary")
    static let agencies = Text("Cơ quan", "Agencies")
    static let agency = Text("Cơ quan", "Agency")
    static let datasets = Text("Bộ dữ liệu", "Datasets")
    static let dataset = Text("Bộ dữ liệu", "Dataset")
    static let system = Text("Hệ thống", "System")
    static let policy = Text("Chính sách", "Policy")
    static let sourceKind = Text("Loại nguồn", "Source kind")
    static let securityLevel = Text("Cấp độ", "Security level")
    static let schedule = Text("Lịch sao lưu", "Schedule")
    static let overall = Text("Kết luận", "Overall")
    static let datasetsPassing = Text("Bộ dữ liệu đạt", "Datasets passing")
    static let datasetsFailing = Text("Bộ dữ liệu không đạt", "Datasets failing")
    static let datasetsNoEvidence = Text("Bộ dữ liệu không có bằng chứng", "Datasets without evidence")

    static let backups = Text("Sao lưu", "Backups")
    static let planned = Text("Theo lịch", "Scheduled")
    static let attempted = Text("Đã chạy", "Run")
    static let succeeded = Text("Thành công", "Succeeded")
    static let failed = Text("Thất bại", "Failed")
    static let partial = Text("Một phần", "Partial")
    static let missed = Text("Bỏ lỡ", "Missed")
    static let unfinished = Text("Chưa kết thúc", "Unfinished")
    static let successRate = Text("Tỷ lệ thành công", "Success rate")
    static let lastGood = Text("Điểm khôi phục tốt gần nhất", "Last good recovery point")
    static let lastVerified = Text("Điểm khôi phục đã kiểm chứng gần nhất", "Last verified recovery point")
    static let worstRpo = Text("RPO thực tế lớn nhất trong kỳ", "Worst achieved RPO in the period")
    static let rpoObjective = Text("Mục tiêu điểm khôi phục (RPO)", "Recovery point objective (RPO)")
    static let rtoObjective = Text("Mục tiêu thời gian khôi phục (RTO)", "Recovery time objective (RTO)")
    static let rpoMet = Text("Đạt RPO", "RPO met")
    static let rtoMet = Text("Đạt RTO", "RTO met")
    static let recoveryPoint = Text("Điểm khôi phục", "Recovery point")
    static let restoreTime = Text("Thời gian khôi phục", "Restore time")
    static let lastRestoreTime = Text("Thời gian khôi phục đo được (lần gần nhất)", "Measured restore time (last)")
    static let worstRestoreTime = Text("Thời gian khôi phục dài nhất trong kỳ", "Longest restore time in the period")
    static let drills = Text("Diễn tập khôi phục", "Restore drills")
    static let drillsDone = Text("Số lần diễn tập", "Drills done")
    static let drillsPassed = Text("Diễn tập đạt", "Drills passed")
    static let drillsFailed = Text("Diễn tập không đạt", "Drills failed")
    static let lastDrill = Text("Lần diễn tập gần nhất", "Last drill")
    static let drillPeriod = Text("Chu kỳ diễn tập", "Drill period")
    static let drillPeriodDefault = Text("chính sách không đặt; áp dụng 30 ngày", "not set by the policy; 30 days used")
    static let failedChecks = Text("Kiểm tra không đạt", "Failed checks")
    static let drillsInPeriod = Text("Các lần diễn tập trong kỳ", "Drills in the period")
    static let backupFailures = Text("Lượt sao lưu lỗi trong kỳ", "Backup failures in the period")
    static let started = Text("Bắt đầu", "Started")
    static let snapshot = Text("Bản chụp", "Snapshot")
    static let result = Text("Kết quả", "Result")
    static let evidence = Text("Bằng chứng", "Evidence")
    static let sealIntact = Text("mã băm khớp", "seal intact")
    static let sealBroken = Text("mã băm KHÔNG khớp", "seal BROKEN")
    static let error = Text("Lỗi", "Error")
    static let never = Text("chưa từng có", "never")
    static let none = Text("không có", "none")
    static let times = Text("lần", "times")
    static let at = Text("lúc", "at")
    static let dimensions = Text("Bốn tiêu chí đúng - đủ - sạch - sống", "The four dimensions: correct, complete, clean, live")
    static let metric = Text("Chỉ số", "Metric")
    static let value = Text("Giá trị", "Value")
    static let threshold = Text("Ngưỡng", "Threshold")

    static let copies = Text("Bản sao tại địa điểm thứ hai", "Copies at a second site")
    static let copiesNotConfigured = Text("Chưa cấu hình (chính sách không có copies:)",
                                          "Not configured (the policy has no copies:)")
    static let copyStatuses: [String: Text] = [
        "notConfigured": Text("Chưa cấu hình", "Not configured"),
        "current": Text("Đã cập nhật", "Current"),
        "behind": Text("Bị chậm", "Behind"),
        "neverCopied": Text("Chưa từng nhận bản sao", "Never copied"),
    ]
    static let destination = Text("Nơi nhận bản sao", "Destination")
    static let copyRuns = Text("Lượt sao chép trong kỳ: thành công / thất bại", "Copy runs in the period: succeeded / failed")
    static let caughtUp = Text("bù lại từ lượt trước", "caught up from earlier runs")
    static let newestCopied = Text("Điểm khôi phục mới nhất đã sao chép", "Newest recovery point copied")
    static let copyLag = Text("Độ trễ so với bản sao lưu tốt mới nhất (cuối kỳ)", "Lag behind the newest good backup (period end)")
    static let allowedLag = Text("độ trễ cho phép (RPO)", "allowed lag (RPO)")
    static let neverCopied = Text("chưa từng sao chép", "never copied")
    static let noLag = Text("0 (đã có bản sao lưu tốt mới nhất)", "0 (holds the newest good backup)")
    static let bytesAdded = Text("dữ liệu thêm", "added")
    static let copyFailures = Text("Lượt sao chép lỗi trong kỳ", "Copy failures in the period")
    static let datasetsWithCopies = Text("Bộ dữ liệu có cấu hình bản sao", "Datasets with copies configured")
    static let copiesCurrent = Text("Bản sao đã cập nhật đến cuối kỳ", "Copies current at the period end")
    static let copiesBehind = Text("Bản sao bị chậm", "Copies behind")
    static let copyDestinations = Text("Nơi nhận", "Destinations")
    static let copyRunsSucceeded = Text("Lượt sao chép thành công", "Copy runs succeeded")
    static let copyRunsFailed = Text("Lượt sao chép thất bại", "Copy runs failed")

    static let ledger = Text("Nhật ký kiểm toán", "Audit ledger")
    static let ledgerIntact = Text("Chuỗi băm toàn vẹn", "Hash chain intact")
    static let ledgerBroken = Text("Chuỗi băm bị phá vỡ tại dòng", "Hash chain broken at line")
    static let ledgerAbsent = Text("Không có sổ nhật ký kiểm toán", "No audit ledger")
    static let ledgerEntries = Text("Số mục đến cuối kỳ", "Entries through the period end")
    static let privilegedActions = Text("Thao tác đặc quyền trong kỳ", "Privileged actions in the period")
    static let sequence = Text("STT", "#")
    static let time = Text("Thời điểm", "Time")
    static let user = Text("Người thực hiện", "User")
    static let command = Text("Lệnh", "Command")
    static let arguments = Text("Tham số", "Arguments")
    static let outcome = Text("Kết quả", "Outcome")

    static let controls = Text("Đối chiếu biện pháp kiểm soát", "Control mapping")
    static let control = Text("Biện pháp kiểm soát", "Control")
    static let status = Text("Mức đáp ứng", "Status")
    static let basis = Text("Căn cứ", "Evidence")
    static let failing = Text("chưa đạt", "not satisfied by")

    static let levels = Text("Yêu cầu sao lưu theo cấp độ an toàn hệ thống thông tin",
                             "Backup requirements by information system security level")
    static let levelsNote = Text("Mức cơ sở do kho đề xuất để tỉnh áp dụng hoặc nâng cao; không trích dẫn nguyên văn văn bản quy phạm.",
                                 "kho's proposed baseline for the province to adopt or tighten; not quoted from a regulation.")
    static let level = Text("Cấp độ", "Level")
    static let maxRpo = Text("RPO tối đa", "Max RPO")
    static let drillAtLeast = Text("Có diễn tập đạt trong vòng", "Passed drill at least every")
    static let minSuccessRate = Text("Tỷ lệ thành công tối thiểu", "Min success rate")
    static let offsiteCopy = Text("Bản sao ngoài trụ sở", "Offsite copy")
    static let auditLedger = Text("Nhật ký kiểm toán", "Audit ledger")
    static let required = Text("bắt buộc", "required")
    static let notRequired = Text("không bắt buộc", "not required")
    static let yes = Text("có", "yes")
    static let no = Text("không", "no")

    static let chartRuns = Text("Lượt sao lưu theo ngày", "Backup runs per day")
    static let chartFreshness = Text("Độ mới của bản sao lưu so với RPO (cuối kỳ)", "Backup freshness against the RPO (at the period end)")
    static let chartRestore = Text("Thời gian khôi phục so với RTO (lần diễn tập gần nhất trong kỳ)",
                                   "Restore time against the RTO (last drill in the period)")
    static let chartNoDrill = Text("không diễn tập trong kỳ", "no drill in the period")
    static let chartRestoreFailed = Text("khôi phục không thành công", "the restore failed")
    static let chartNoBackup = Text("không có bản sao lưu tốt", "no good backup")
    static let legendDrills = Text("Diễn tập", "Drills")
    static let objectiveMark = Text("mục tiêu", "objective")

    static let method = Text("Cách tính", "How the figures are computed")
    static let methodItems: [Text] = [
        Text("Chỉ tính các lượt chạy bắt đầu trong kỳ và đã kết thúc trước cuối kỳ; lượt chưa kết thúc được ghi riêng.",
             "Only runs that started in the period and finished by its end count; unfinished runs are shown separately."),
        Text("Lượt theo lịch: các thời điểm lịch sao lưu kích hoạt trong kỳ, kể từ thời điểm dự kiến của lượt sao lưu đầu tiên kho từng chạy cho nguồn đó. Bỏ lỡ: thời điểm theo lịch không có lượt nào dành cho nó và không có lượt nào bắt đầu trước thời điểm kế tiếp.",
             "Scheduled: the times the schedule fired in the period, from the planned time of the first backup kho ever ran of the source. Missed: a scheduled time with no run planned for it and none started before the next one."),
        Text("Tỷ lệ thành công = thành công ÷ (đã chạy + bỏ lỡ). Bản sao lưu một phần không được tính là điểm khôi phục tốt.",
             "Success rate = succeeded ÷ (run + missed). A partial backup is not counted as a good recovery point."),
        Text("RPO thực tế lớn nhất: khoảng cách dài nhất trong kỳ giữa thời điểm dữ liệu của hai bản sao lưu tốt liên tiếp, hoặc từ bản cuối cùng đến cuối kỳ. Được coi là đạt RPO nếu không vượt quá RPO thêm 1% (ít nhất 1 phút), phần dung sai cho độ trễ khởi động của lịch chạy.",
             "Worst achieved RPO: the longest gap in the period between the data times of two successive good backups, or from the last one to the period end. It meets the RPO when it exceeds it by no more than 1% (at least a minute), a tolerance for the scheduler's start-up jitter."),
        Text("Điểm khôi phục đã kiểm chứng: bản chụp của lần diễn tập đạt gần nhất có bằng chứng còn nguyên mã băm.",
             "Verified recovery point: the snapshot of the newest passed drill whose evidence seal is intact."),
        Text("Bộ dữ liệu không có lượt chạy nào trong kỳ được ghi là «không có bằng chứng» (màu đỏ), không bao giờ là «đạt».",
             "A dataset with no run in the period is shown as “no evidence” (red), never as a pass."),
        Text("Bản sao tại địa điểm thứ hai: mỗi nơi nhận trong mục copies: của chính sách. Độ trễ = thời điểm dữ liệu của bản sao lưu tốt mới nhất − thời điểm dữ liệu của bản chụp mới nhất đã sao chép thành công tới nơi đó, tính tại cuối kỳ. Bộ dữ liệu có bản sao «đã cập nhật» khi mọi nơi nhận có độ trễ không quá RPO (thêm dung sai 1%, ít nhất 1 phút); nơi nhận chưa từng nhận bản sao nào làm bộ dữ liệu «bị chậm».",
             "Copies at a second site: each destination in the policy's copies:. Lag = the data time of the newest good backup − the data time of the newest snapshot copied there successfully, at the period end. A dataset's copies are “current” when every destination lags by no more than the RPO (plus the 1% tolerance, at least a minute); a destination that has never received a copy makes them “behind”."),
    ]

    static let verdicts: [Verdict: Text] = [
        .pass: Text("Đạt", "Pass"),
        .fail: Text("Không đạt", "Fail"),
        .noEvidence: Text("Không có bằng chứng", "No evidence"),
        .notApplicable: Text("Không áp dụng", "Not applicable"),
        .notRecorded: Text("Chưa ghi nhận", "Not recorded"),
    ]

    static let controlStatuses: [ControlStatus: Text] = [
        .met: Text("Đáp ứng", "Met"),
        .partlyMet: Text("Đáp ứng một phần", "Partly met"),
        .notMet: Text("Chưa đáp ứng", "Not met"),
    ]

    static let dimensionNames: [String: Text] = [
        "correct": Text("Đúng", "Correct"),
        "complete": Text("Đủ", "Complete"),
        "clean": Text("Sạch", "Clean"),
        "live": Text("Sống", "Live"),
    ]

    static let dimensionMeanings: [String: Text] = [
        "correct": Text("dữ liệu đọc lại được, đã xác thực và khớp với bản ghi lúc sao lưu",
                        "data read back, authenticated and equal to what was recorded at backup"),
        "complete": Text("đủ mọi bảng, mọi dòng; nguồn có bản sao lưu trong kỳ",
                         "every table and row present; the source has a backup in the period"),
        "clean": Text("kiểm tra toàn vẹn không lỗi; không lỗi kết xuất; không co hụt bất thường",
                      "integrity checks clean; no dump errors; no suspicious shrink"),
        "live": Text("bản sao lưu tốt mới nhất trong RPO; diễn tập gần nhất trong chu kỳ",
                     "newest good backup within the RPO; last drill within the drill period"),
    ]

    static let metrics: [String: Text] = [
        "drillContentEqual": Text("Bảng/tệp khôi phục sai khác so với lúc sao lưu (lần diễn tập gần nhất)",
                                  "Restored tables or files that differ from the record (last drill)"),
        "evidenceSealsBroken": Text("Bằng chứng diễn tập có mã băm không khớp", "Drill evidence whose seal is broken"),
        "readDataCoverage": Text("Đọc lại toàn bộ kho lưu trữ (kho check --read-data): kết quả chưa được ghi vào sổ ghi của kho",
                                 "Full read-back of the repository (kho check --read-data): results are not recorded in the catalog yet"),
        "drillTablesMissing": Text("Bảng/tệp thiếu hoặc lệch số dòng (lần diễn tập gần nhất)",
                                   "Tables or files missing or with other row counts (last drill)"),
        "successfulBackups": Text("Lượt sao lưu thành công trong kỳ", "Successful backups in the period"),
        "lastBackupComplete": Text("Bản sao lưu mới nhất đầy đủ (không phải một phần)", "Newest backup complete (not partial)"),
        "integrityChecksFailed": Text("Kiểm tra toàn vẹn của hệ quản trị CSDL không đạt (pg_amcheck, CHECK TABLE, PRAGMA integrity_check)",
                                      "Database engine integrity checks failed (pg_amcheck, CHECK TABLE, PRAGMA integrity_check)"),
        "dumpErrors": Text("Lượt sao lưu lỗi trong kỳ", "Failed backup runs in the period"),
        "shrinkAlerts": Text("Cảnh báo bản kết xuất co hụt bất thường", "Suspicious shrink alerts"),
        "newestGoodAge": Text("Độ cũ của bản sao lưu tốt mới nhất tại thời điểm cuối kỳ", "Age of the newest good backup at the period end"),
        "lastDrillAge": Text("Thời gian từ lần diễn tập gần nhất đến cuối kỳ", "Time from the last drill to the period end"),
    ]

    static let facts: [String: Text] = [
        "goodBackupInPeriod": Text("Bộ dữ liệu có bản sao lưu thành công trong kỳ", "Datasets with a successful backup in the period"),
        "rpoMet": Text("Bộ dữ liệu đạt RPO suốt kỳ", "Datasets that met their RPO throughout the period"),
        "passedDrillWithinPeriod": Text("Bộ dữ liệu có diễn tập đạt trong chu kỳ diễn tập", "Datasets with a passed drill within their drill period"),
        "rtoMet": Text("Bộ dữ liệu khôi phục trong RTO ở mọi lần diễn tập của kỳ", "Datasets restored within the RTO in every drill of the period"),
        "contentVerified": Text("Bộ dữ liệu đạt tiêu chí «đúng»", "Datasets passing “correct”"),
        "noMissedRuns": Text("Bộ dữ liệu không bỏ lỡ lượt sao lưu theo lịch", "Datasets with no missed scheduled backup"),
        "successRateAtLevel": Text("Bộ dữ liệu đạt tỷ lệ thành công tối thiểu theo cấp độ", "Datasets at their level's minimum success rate"),
        "objectivesDefined": Text("Chính sách đặt RPO và RTO", "Policies that set an RPO and an RTO"),
        "drillsScheduled": Text("Chính sách có lịch diễn tập khôi phục", "Policies that schedule restore drills"),
        "encryptedByDesign": Text("Bản sao lưu mã hóa và xác thực AES-256-GCM (luôn bật trong kho)",
                                  "Backups encrypted and authenticated with AES-256-GCM (always on in kho)"),
        "offsiteCopy": Text("Bộ dữ liệu có bản sao tại địa điểm thứ hai, cập nhật đến cuối kỳ (mọi nơi nhận chậm không quá RPO so với bản sao lưu tốt mới nhất)",
                            "Datasets with copies at a second site, current at the period end (every destination no more than the RPO behind the newest good backup)"),
        "ledgerIntact": Text("Nhật ký kiểm toán toàn vẹn", "Audit ledger intact"),
        "evidenceSealed": Text("Bằng chứng diễn tập còn nguyên mã băm", "Drill evidence with an intact seal"),
        "levelRpoObjective": Text("RPO của chính sách không quá {t}", "Policy RPO no longer than {t}"),
        "levelDrillFrequency": Text("Có diễn tập đạt trong vòng {t}", "A passed drill within {t}"),
        "levelSuccessRate": Text("Tỷ lệ thành công từ {t}", "Success rate of at least {t}"),
    ]

    static let controlTitles: [String: Text] = [
        "iso27001-A.8.13": Text("Sao lưu thông tin", "Information backup"),
        "cis-11.1": Text("Thiết lập và duy trì quy trình khôi phục dữ liệu", "Establish and maintain a data recovery process"),
        "cis-11.2": Text("Thực hiện sao lưu tự động", "Perform automated backups"),
        "cis-11.3": Text("Bảo vệ dữ liệu khôi phục", "Protect recovery data"),
        "cis-11.4": Text("Thiết lập và duy trì bản dữ liệu khôi phục tách biệt", "Establish and maintain an isolated instance of recovery data"),
        "cis-11.5": Text("Kiểm thử khôi phục dữ liệu", "Test data recovery"),
        "nist-CP-4": Text("Kiểm thử kế hoạch dự phòng", "Contingency plan testing"),
        "nist-CP-9": Text("Sao lưu hệ thống", "System backup"),
    ]
    static let levelControl = Text("Yêu cầu sao lưu đối với hệ thống cấp độ {n}", "Backup requirements for security level {n}")
    static let levelFramework = Text("Cấp độ an toàn HTTT", "Security level")

    /// The outcomes a report shows (of backups, copies and drills; late and missed are notify
    /// rows', which no report lists).
    static let outcomes: [RunOutcome: Text] = [
        .success: Text("thành công", "success"),
        .failure: Text("thất bại", "failure"),
        .partial: Text("một phần", "partial"),
        .running: Text("đang chạy", "running"),
    ]

    static let sourceKinds: [SourceSpec.Kind: Text] = [
        .postgres: Text("PostgreSQL", "PostgreSQL"),
        .mariadb: Text("MariaDB/MySQL", "MariaDB/MySQL"),
        .sqlite: Text("SQLite", "SQLite"),
        .files: Text("thư mục tệp", "files"),
        .command: Text("lệnh kết xuất", "dump command"),
        .postgresBase: Text("PostgreSQL (bản sao lưu vật lý)", "PostgreSQL base backup"),
    ]

    static let csvColumns: [(key: String, text: Text)] = [
        ("agency", Text("Cơ quan", "Agency")),
        ("system", Text("Hệ thống", "System")),
        ("policy", Text("Chính sách", "Policy")),
        ("source", Text("Bộ dữ liệu", "Dataset")),
        ("kind", Text("Loại nguồn", "Source kind")),
        ("level", Text("Cấp độ", "Security level")),
        ("planned", Text("Sao lưu theo lịch", "Scheduled backups")),
        ("attempted", Text("Sao lưu đã chạy", "Backups run")),
        ("succeeded", Text("Thành công", "Succeeded")),
        ("failed", Text("Thất bại", "Failed")),
        ("partial", Text("Một phần", "Partial")),
        ("missed", Text("Bỏ lỡ", "Missed")),
        ("unfinished", Text("Chưa kết thúc", "Unfinished")),
        ("successRate", Text("Tỷ lệ thành công (%)", "Success rate (%)")),
        ("lastGood", Text("Điểm khôi phục tốt gần nhất", "Last good recovery point")),
        ("lastGoodSnapshot", Text("Bản chụp tốt gần nhất", "Last good snapshot")),
        ("lastVerified", Text("Điểm khôi phục đã kiểm chứng gần nhất", "Last verified recovery point")),
        ("lastVerifiedSnapshot", Text("Bản chụp đã kiểm chứng gần nhất", "Last verified snapshot")),
        ("worstRpo", Text("RPO thực tế lớn nhất (giây)", "Worst achieved RPO (s)")),
        ("rpo", Text("RPO mục tiêu (giây)", "RPO objective (s)")),
        ("rpoMet", Text("Đạt RPO", "RPO met")),
        ("drills", Text("Số lần diễn tập", "Drills done")),
        ("drillsPassed", Text("Diễn tập đạt", "Drills passed")),
        ("lastDrill", Text("Lần diễn tập gần nhất", "Last drill")),
        ("lastDrillPassed", Text("Diễn tập gần nhất đạt", "Last drill passed")),
        ("lastRto", Text("Thời gian khôi phục gần nhất (giây)", "Last restore time (s)")),
        ("worstRto", Text("Thời gian khôi phục dài nhất (giây)", "Longest restore time (s)")),
        ("rto", Text("RTO mục tiêu (giây)", "RTO objective (s)")),
        ("rtoMet", Text("Đạt RTO", "RTO met")),
        ("failedChecks", Text("Kiểm tra không đạt", "Failed checks")),
        ("correct", Text("Đúng", "Correct")),
        ("complete", Text("Đủ", "Complete")),
        ("clean", Text("Sạch", "Clean")),
        ("live", Text("Sống", "Live")),
        ("overall", Text("Kết luận", "Overall")),
        ("copies", Text("Bản sao", "Copies")),
        ("copyDestinations", Text("Số nơi nhận bản sao", "Copy destinations")),
        ("copyDestinationsCurrent", Text("Nơi nhận đã cập nhật", "Destinations current")),
        ("copyLagMax", Text("Độ trễ bản sao lớn nhất (giây)", "Largest copy lag (s)")),
        ("copyRunsSucceeded", Text("Lượt sao chép thành công", "Copy runs succeeded")),
        ("copyRunsFailed", Text("Lượt sao chép thất bại", "Copy runs failed")),
        ("copyDetails", Text("Chi tiết bản sao", "Copy details")),
        ("periodFrom", Text("Kỳ báo cáo từ", "Period from")),
        ("periodTo", Text("Kỳ báo cáo đến", "Period to")),
        ("scopePolicy", Text("Giới hạn chính sách", "Policy filter")),
        ("generatedAt", Text("Lập lúc", "Generated at")),
        ("khoVersion", Text("Phiên bản kho", "kho version")),
        ("host", Text("Máy lập báo cáo", "Host")),
        ("dataSHA256", Text("SHA-256 của dữ liệu", "SHA-256 of the data")),
    ]
}
