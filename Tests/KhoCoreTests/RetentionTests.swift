import Foundation
import Testing
import KhoCore
import KhoSupport

// Retention is a pure function: these tests give it snapshot times and tags and check the exact
// set it keeps and the rule it names for each decision.

private typealias RetentionInput = (id: String, time: Date, tags: [String])

/// An RFC 3339 time with an explicit offset, e.g. "2026-03-10T23:30:00Z" or "2026-03-11T06:30:00+07:00".
private func instant(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> Date {
    guard let date = Timestamp.parse(text) else {
        Issue.record("bad time in the test: \(text)", sourceLocation: sourceLocation)
        return Date(timeIntervalSince1970: 0)
    }
    return date
}

private func snap(_ id: String, _ time: String, tags: [String] = []) -> RetentionInput {
    (id, instant(time), tags)
}

private func policy(last: Int = 0, hourly: Int = 0, daily: Int = 0, weekly: Int = 0, monthly: Int = 0, yearly: Int = 0,
                    within: TimeInterval? = nil, tags: [String] = [], timeZone: String? = nil) -> RetentionPolicy {
    var p = RetentionPolicy()
    p.last = last
    p.hourly = hourly
    p.daily = daily
    p.weekly = weekly
    p.monthly = monthly
    p.yearly = yearly
    p.within = within
    p.tags = tags
    if let timeZone { p.timeZone = timeZone }
    return p
}

private struct Outcome {
    var decisions: [RetentionDecision]

    var kept: Set<String> { Set(decisions.filter(\.keep).map(\.snapshotID)) }
    var removed: Set<String> { Set(decisions.filter { !$0.keep }.map(\.snapshotID)) }

    func reasons(_ id: String) -> [String] {
        decisions.first { $0.snapshotID == id }?.reasons ?? ["<no decision for \(id)>"]
    }

    /// Whether the decision for `id` has a reason containing `text`.
    func reason(_ id: String, contains text: String) -> Bool {
        reasons(id).contains { $0.contains(text) }
    }
}

/// Applies the policy and checks what holds for every outcome: one decision per snapshot, each
/// with at least one reason; removed ones say exactly "no rule keeps it", kept ones never do.
private func apply(_ policy: RetentionPolicy, _ snapshots: [RetentionInput],
                   sourceLocation: SourceLocation = #_sourceLocation) -> Outcome {
    let decisions = Retention.apply(policy, to: snapshots)
    #expect(decisions.count == snapshots.count, "one decision per snapshot", sourceLocation: sourceLocation)
    #expect(Set(decisions.map(\.snapshotID)) == Set(snapshots.map(\.id)), sourceLocation: sourceLocation)
    for d in decisions {
        #expect(!d.reasons.isEmpty, "\(d.snapshotID) has no reason", sourceLocation: sourceLocation)
        if d.keep {
            #expect(!d.reasons.contains("no rule keeps it"), "\(d.snapshotID) is kept but says \(d.reasons)", sourceLocation: sourceLocation)
        } else {
            #expect(d.reasons == ["no rule keeps it"], "\(d.snapshotID) is removed with reasons \(d.reasons)", sourceLocation: sourceLocation)
        }
        let input = snapshots.first { $0.id == d.snapshotID }
        #expect(input?.time == d.time, "the decision carries the snapshot's time", sourceLocation: sourceLocation)
    }
    return Outcome(decisions: decisions)
}

@Suite("retention (pure function)")
struct RetentionTests {
    @Test("an empty policy keeps nothing, and says so for every snapshot")
    func emptyPolicyKeepsNothing() {
        let snapshots = [snap("a", "2026-01-01T01:00:00Z"), snap("b", "2026-01-02T01:00:00Z", tags: ["x"]),
                         snap("c", "2026-01-02T01:00:00Z")]
        let empty = RetentionPolicy()
        #expect(empty.isEmpty)
        let outcome = apply(empty, snapshots)
        #expect(outcome.kept.isEmpty)
        #expect(outcome.decisions.allSatisfy { $0.reasons == ["no rule keeps it"] }, "\(outcome.decisions.map(\.reasons))")
        // No snapshot at all: no decision, no crash.
        #expect(Retention.apply(policy(last: 3, daily: 2, within: 86400), to: []).isEmpty)
    }

    @Test("keep-daily counts days that have a snapshot, not calendar days (gaps), newest of each day")
    func dailyWithGaps() {
        // Vietnam noon (05:00 UTC) on days 1, 2, 3, 10, 11 and twice on day 20; nothing in between.
        let snapshots = [
            snap("d01", "2026-01-01T12:00:00+07:00"), snap("d02", "2026-01-02T12:00:00+07:00"),
            snap("d03", "2026-01-03T12:00:00+07:00"), snap("d10", "2026-01-10T12:00:00+07:00"),
            snap("d11", "2026-01-11T12:00:00+07:00"), snap("d20a", "2026-01-20T08:00:00+07:00"),
            snap("d20b", "2026-01-20T21:00:00+07:00"),
        ]
        let outcome = apply(policy(daily: 4), snapshots)
        #expect(outcome.kept == ["d20b", "d11", "d10", "d03"], "\(outcome.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(outcome.reason("d20b", contains: "daily 2026-01-20"))
        #expect(outcome.reason("d03", contains: "daily 2026-01-03"))
        #expect(outcome.removed == ["d20a", "d02", "d01"])

        // More days asked than exist: every day's newest is kept, the older one of day 20 is not.
        let all = apply(policy(daily: 30), snapshots)
        #expect(all.kept == ["d01", "d02", "d03", "d10", "d11", "d20b"])

        // The input order does not matter.
        #expect(apply(policy(daily: 4), Array(snapshots.reversed())).kept == outcome.kept)
        #expect(apply(policy(daily: 4), [snapshots[3], snapshots[6], snapshots[0], snapshots[5], snapshots[2], snapshots[1], snapshots[4]]).kept == outcome.kept)
    }

    @Test("equal times with different IDs give the same decisions whatever the input order")
    func duplicateTimesAreDeterministic() {
        let t = "2026-05-05T10:00:00+07:00"
        let snapshots = [snap("7f3a", t), snap("01bc", t), snap("c9d2", t), snap("older", "2026-05-04T10:00:00+07:00")]
        let permutations: [[Int]] = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2], [2, 3, 0, 1], [1, 2, 0, 3]]
        for rules in [policy(last: 1), policy(last: 2), policy(daily: 1), policy(daily: 2), policy(hourly: 1), policy(weekly: 1)] {
            let results = permutations.map { order in apply(rules, order.map { snapshots[$0] }) }
            let first = results[0]
            for (n, other) in results.enumerated().dropFirst() {
                #expect(other.kept == first.kept, "permutation \(permutations[n]) with \(rules): \(other.kept) vs \(first.kept)")
                #expect(other.decisions.map(\.snapshotID) == first.decisions.map(\.snapshotID),
                        "decisions come in the same order whatever the input order")
                #expect(other.decisions.map(\.reasons) == first.decisions.map(\.reasons))
            }
        }
        // One snapshot per day: of the three equal newest times exactly one is kept for the day.
        let daily = apply(policy(daily: 2), snapshots)
        #expect(daily.kept.count == 2)
        #expect(daily.kept.contains("older"))
        #expect(daily.kept.intersection(["7f3a", "01bc", "c9d2"]).count == 1)
        // keep-last 2 keeps two of the three equal newest, never the older one.
        let last = apply(policy(last: 2), snapshots)
        #expect(last.kept.count == 2 && !last.kept.contains("older"))
        // Decisions are listed newest first.
        #expect(last.decisions.last?.snapshotID == "older")
    }

    @Test("month ends: Jan 31 and Feb 28 in Vietnam time, keep-monthly picks each month's last snapshot")
    func monthEnds() {
        let snapshots = [
            snap("jan30", "2025-01-30T12:00:00+07:00"),
            // 23:00 on Jan 31 in Vietnam (16:00 UTC): January.
            snap("jan31", "2025-01-31T23:00:00+07:00"),
            // 00:30 on Feb 1 in Vietnam, still Jan 31 in UTC (17:30 UTC): February.
            snap("feb01", "2025-01-31T17:30:00Z"),
            snap("feb27", "2025-02-27T09:00:00+07:00"),
            // Feb 28 23:59 in Vietnam: the last moment of February 2025 (not a leap year).
            snap("feb28", "2025-02-28T23:59:00+07:00"),
            // Mar 1 00:10 in Vietnam, still Feb 28 in UTC.
            snap("mar01", "2025-02-28T17:10:00Z"),
            snap("mar31", "2025-03-31T20:00:00+07:00"),
        ]
        let outcome = apply(policy(monthly: 3), snapshots)
        #expect(outcome.kept == ["mar31", "feb28", "jan31"], "\(outcome.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(outcome.reason("feb28", contains: "monthly 2025-02"))
        #expect(outcome.reason("jan31", contains: "monthly 2025-01"))
        #expect(outcome.reason("mar31", contains: "monthly 2025-03"))

        // The same instants counted in UTC: Feb 1 00:30 VN is January, Mar 1 00:10 VN is February.
        let utc = apply(policy(monthly: 3, timeZone: "UTC"), snapshots)
        #expect(utc.kept == ["mar31", "mar01", "feb01"], "\(utc.decisions.map { ($0.snapshotID, $0.reasons) })")

        // Daily across the month end: Jan 31 and Feb 1 are two days in Vietnam.
        let daily = apply(policy(daily: 7), snapshots)
        #expect(daily.kept == Set(snapshots.map(\.id)))
        #expect(daily.reason("feb01", contains: "daily 2025-02-01"))
        #expect(daily.reason("mar01", contains: "daily 2025-03-01"))
    }

    @Test("leap years: 2024-02-29 is a day of its own and the newest of February 2024")
    func leapYear() {
        let snapshots = [
            snap("2023-12", "2023-12-31T22:00:00+07:00"),
            snap("feb28", "2024-02-28T10:00:00+07:00"),
            snap("feb29-early", "2024-02-29T01:00:00+07:00"),
            snap("feb29-late", "2024-02-29T23:00:00+07:00"),
            snap("mar01", "2024-03-01T00:30:00+07:00"),
        ]
        let daily = apply(policy(daily: 3), snapshots)
        #expect(daily.kept == ["mar01", "feb29-late", "feb28"], "\(daily.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(daily.reason("feb29-late", contains: "daily 2024-02-29"))

        let monthly = apply(policy(monthly: 2), snapshots)
        #expect(monthly.kept == ["mar01", "feb29-late"])
        #expect(monthly.reason("feb29-late", contains: "monthly 2024-02"))

        let yearly = apply(policy(yearly: 5), snapshots)
        #expect(yearly.kept == ["mar01", "2023-12"])
        #expect(yearly.reason("mar01", contains: "yearly 2024"))
        #expect(yearly.reason("2023-12", contains: "yearly 2023"))
        // 22:00 Dec 31 in Vietnam is 15:00 UTC, still 2023 either way; 01:00 Jan 1 2024 in Vietnam is 2023 in UTC.
        let newYear = [snap("vn-2024", "2024-01-01T01:00:00+07:00"), snap("vn-2023", "2023-12-31T22:00:00+07:00")]
        #expect(apply(policy(yearly: 2), newYear).kept == ["vn-2024", "vn-2023"])
        #expect(apply(policy(yearly: 2, timeZone: "UTC"), newYear).kept == ["vn-2024"])
    }

    @Test("days follow Vietnam time (UTC+7): 23:30 UTC is the next day in Ho Chi Minh City")
    func vietnamDayBoundary() {
        let snapshots = [
            snap("c", "2026-03-10T12:00:00Z"), // 19:00 on Mar 10 in Vietnam
            snap("a", "2026-03-10T23:30:00Z"), // 06:30 on Mar 11 in Vietnam
            snap("b", "2026-03-11T10:00:00Z"), // 17:00 on Mar 11 in Vietnam
        ]
        // Default time zone is Asia/Ho_Chi_Minh.
        #expect(RetentionPolicy().timeZone == "Asia/Ho_Chi_Minh")
        let vietnam = apply(policy(daily: 2), snapshots)
        #expect(vietnam.kept == ["b", "c"], "\(vietnam.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(vietnam.reason("b", contains: "daily 2026-03-11"))
        #expect(vietnam.reason("c", contains: "daily 2026-03-10"))
        #expect(vietnam.removed == ["a"])

        // In UTC "a" is the newest of Mar 10 instead.
        let utc = apply(policy(daily: 2, timeZone: "UTC"), snapshots)
        #expect(utc.kept == ["b", "a"])
        #expect(utc.reason("a", contains: "daily 2026-03-10"))

        // Hours, too, are Vietnam hours: 23:30 UTC is the 06h of the next day.
        let hourly = apply(policy(hourly: 1), [snap("x", "2026-03-10T23:30:00Z")])
        #expect(hourly.reason("x", contains: "hourly") && hourly.reason("x", contains: "11 6h"), "\(hourly.reasons("x"))")
        let hourlyUTC = apply(policy(hourly: 1, timeZone: "UTC"), [snap("x", "2026-03-10T23:30:00Z")])
        #expect(hourlyUTC.reason("x", contains: "10 23h"), "\(hourlyUTC.reasons("x"))")
    }

    @Test("keep-weekly uses ISO weeks (Monday first, week 53 across the year boundary), in Vietnam time")
    func isoWeeksAcrossYearBoundary() {
        // 2026 has 53 ISO weeks: 2026-W53 runs Mon Dec 28, 2026 to Sun Jan 3, 2027.
        let snapshots = [
            snap("w51", "2026-12-20T10:00:00+07:00"), // Sun, 2026-W51
            snap("w52", "2026-12-27T10:00:00+07:00"), // Sun, 2026-W52
            // Sun Dec 27 20:00 UTC = Mon Dec 28 03:00 in Vietnam: 2026-W53 (W52 in UTC).
            snap("w53-mon", "2026-12-27T20:00:00Z"),
            snap("w53-thu", "2026-12-31T10:00:00+07:00"),
            snap("w53-sun", "2027-01-03T22:00:00+07:00"), // Sun Jan 3, 2027, still 2026-W53
            snap("w01-mon", "2027-01-04T08:00:00+07:00"), // 2027-W01
            snap("w01-tue", "2027-01-05T08:00:00+07:00"),
        ]
        let outcome = apply(policy(weekly: 3), snapshots)
        #expect(outcome.kept == ["w01-tue", "w53-sun", "w52"], "\(outcome.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(outcome.reason("w01-tue", contains: "weekly 2027-W01"))
        #expect(outcome.reason("w53-sun", contains: "weekly 2026-W53"))
        #expect(outcome.reason("w52", contains: "weekly 2026-W52"))

        // Counted in UTC, Monday 03:00 in Vietnam is still Sunday of W52, and the newest of W52.
        let utc = apply(policy(weekly: 3, timeZone: "UTC"), snapshots)
        #expect(utc.kept == ["w01-tue", "w53-sun", "w53-mon"], "\(utc.decisions.map { ($0.snapshotID, $0.reasons) })")

        // 2024-12-30 (Monday) already belongs to 2025-W01.
        let other = [snap("sun", "2024-12-29T12:00:00+07:00"), snap("mon", "2024-12-30T12:00:00+07:00"),
                     snap("jan1", "2025-01-01T12:00:00+07:00")]
        let weekly = apply(policy(weekly: 2), other)
        #expect(weekly.kept == ["jan1", "sun"])
        #expect(weekly.reason("jan1", contains: "weekly 2025-W01"))
        #expect(weekly.reason("sun", contains: "weekly 2024-W52"))
    }

    @Test("keep-last and keep-daily together: a snapshot kept by both names both rules")
    func lastAndDailyCombined() {
        let snapshots = [
            snap("s1", "2026-06-01T08:00:00+07:00"),
            snap("s2", "2026-06-02T08:00:00+07:00"),
            snap("s3", "2026-06-02T20:00:00+07:00"),
            snap("s4", "2026-06-03T08:00:00+07:00"),
            snap("s5", "2026-06-03T09:00:00+07:00"),
        ]
        let outcome = apply(policy(last: 2, daily: 2), snapshots)
        // last 2: s5, s4; daily 2: s5 (Jun 3), s3 (Jun 2).
        #expect(outcome.kept == ["s5", "s4", "s3"], "\(outcome.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(outcome.reason("s5", contains: "last") && outcome.reason("s5", contains: "daily 2026-06-03"), "\(outcome.reasons("s5"))")
        #expect(outcome.reasons("s5").count == 2)
        #expect(outcome.reason("s4", contains: "last") && !outcome.reason("s4", contains: "daily"), "\(outcome.reasons("s4"))")
        #expect(outcome.reason("s3", contains: "daily 2026-06-02") && !outcome.reason("s3", contains: "last"), "\(outcome.reasons("s3"))")
        #expect(outcome.removed == ["s1", "s2"])
    }

    @Test("keep-within counts back from the newest snapshot, not from now")
    func withinRelativeToNewest() {
        // Long ago: counting from now would keep nothing.
        let snapshots = [
            snap("newest", "2019-07-10T12:00:00+07:00"),
            snap("edge", "2019-07-08T12:00:00+07:00"),          // exactly 48 h before the newest
            snap("outside", "2019-07-08T11:59:59+07:00"),       // one second more
            snap("old", "2019-06-01T12:00:00+07:00"),
        ]
        let outcome = apply(policy(within: 2 * 86400), snapshots)
        #expect(outcome.kept == ["newest", "edge"], "\(outcome.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(outcome.reason("edge", contains: "within 2d"), "\(outcome.reasons("edge"))")
        #expect(outcome.reason("newest", contains: "within"))
        #expect(outcome.removed == ["outside", "old"])
    }

    @Test("keep-tag keeps every snapshot with one of the tags and names the tag")
    func keepTag() {
        let snapshots = [
            snap("audit", "2026-02-01T10:00:00+07:00", tags: ["audit", "monthly"]),
            snap("other", "2026-02-02T10:00:00+07:00", tags: ["nightly"]),
            snap("legal", "2026-01-01T10:00:00+07:00", tags: ["legal-hold"]),
            snap("plain", "2026-02-03T10:00:00+07:00"),
        ]
        let outcome = apply(policy(tags: ["audit", "legal-hold"]), snapshots)
        #expect(outcome.kept == ["audit", "legal"], "\(outcome.decisions.map { ($0.snapshotID, $0.reasons) })")
        #expect(outcome.reason("audit", contains: "tagged audit"))
        #expect(!outcome.reason("audit", contains: "monthly"), "only the matching tag is named: \(outcome.reasons("audit"))")
        #expect(outcome.reason("legal", contains: "tagged legal-hold"))
        #expect(outcome.removed == ["other", "plain"])

        // Together with keep-last: the newest by last, the tagged ones by tag.
        let combined = apply(policy(last: 1, tags: ["legal-hold"]), snapshots)
        #expect(combined.kept == ["plain", "legal"])
        #expect(combined.reason("plain", contains: "last 1 of 1"))
    }

    @Test("hourly, monthly and yearly keep the newest of each period, up to N periods")
    func otherPeriods() {
        let snapshots = [
            snap("h1a", "2026-04-01T10:05:00+07:00"), snap("h1b", "2026-04-01T10:55:00+07:00"),
            snap("h2", "2026-04-01T11:30:00+07:00"), snap("h3", "2026-04-01T13:00:00+07:00"),
            snap("y2025", "2025-11-30T10:00:00+07:00"), snap("y2024", "2024-06-30T10:00:00+07:00"),
        ]
        let hourly = apply(policy(hourly: 3), snapshots)
        #expect(hourly.kept == ["h3", "h2", "h1b"])
        #expect(hourly.reason("h1b", contains: "hourly") && hourly.reason("h1b", contains: "(3 of 3)"), "\(hourly.reasons("h1b"))")
        let yearly = apply(policy(yearly: 2), snapshots)
        #expect(yearly.kept == ["h3", "y2025"])
        let monthly = apply(policy(monthly: 2), snapshots)
        #expect(monthly.kept == ["h3", "y2025"])
        #expect(monthly.reason("y2025", contains: "monthly 2025-11"))
    }
}
