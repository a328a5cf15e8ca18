import Foundation
import KhoCore
import KhoSupport
import KhoPolicy
import Testing

// Cron schedules: parsing (lists, ranges, steps, names, day-of-week 7), next-fire computation in a
// time zone (Asia/Ho_Chi_Minh has no daylight saving time: always UTC+7), the day-of-month /
// day-of-week OR rule of Vixie cron, month ends, schedules that never run, bad fields with their
// messages, and `latest(after:upTo:)` which makes a missed run caught up once.

let hoChiMinh = TimeZone(identifier: "Asia/Ho_Chi_Minh")!
let utc = TimeZone(identifier: "UTC")!

/// An RFC 3339 time with an explicit offset.
func at(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> Date {
    guard let date = Timestamp.parse(text) else {
        Issue.record("bad time in the test: \(text)", sourceLocation: sourceLocation)
        return Date(timeIntervalSince1970: 0)
    }
    return date
}

/// The time as RFC 3339 in UTC+7 (for readable failure messages and exact comparisons).
func local(_ date: Date?) -> String {
    guard let date else { return "nil" }
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = hoChiMinh
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

func utcText(_ date: Date?) -> String {
    guard let date else { return "nil" }
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = utc
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

private func cron(_ expression: String, _ zone: TimeZone = hoChiMinh, sourceLocation: SourceLocation = #_sourceLocation) throws -> CronSchedule {
    do {
        return try CronSchedule(expression, timeZone: zone)
    } catch let error as CronSchedule.ParseError {
        Issue.record("\"\(expression)\" refused: \(error.message)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The first `count` fire times after `start`, as local RFC 3339 text.
private func fires(_ expression: String, after start: String, count: Int, zone: TimeZone = hoChiMinh,
                   sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
    let schedule = try cron(expression, zone, sourceLocation: sourceLocation)
    var result: [String] = []
    var cursor = at(start)
    for _ in 0..<count {
        guard let next = schedule.next(after: cursor) else { break }
        result.append(zone == utc ? utcText(next) : local(next))
        cursor = next
    }
    return result
}

/// The message a refused expression gives.
private func refusal(_ expression: String) -> String? {
    do {
        _ = try CronSchedule(expression, timeZone: hoChiMinh)
        return nil
    } catch let error as CronSchedule.ParseError {
        return error.message
    } catch {
        return "unexpected error \(error)"
    }
}

extension KhoPolicyUnitTests {
@Suite("cron schedules")
struct CronTests {
    @Test("every night at 01:30 in Asia/Ho_Chi_Minh is 18:30 UTC the day before")
    func nightlyInHoChiMinh() throws {
        #expect(try fires("30 1 * * *", after: "2026-03-01T00:00:00+07:00", count: 3)
                == ["2026-03-01T01:30:00+07:00", "2026-03-02T01:30:00+07:00", "2026-03-03T01:30:00+07:00"])
        let schedule = try cron("30 1 * * *")
        #expect(utcText(schedule.next(after: at("2026-03-01T00:00:00Z"))) == "2026-03-01T18:30:00Z")
        // The same expression in UTC fires seven hours later.
        let inUTC = try cron("30 1 * * *", utc)
        #expect(utcText(inUTC.next(after: at("2026-03-01T00:00:00Z"))) == "2026-03-01T01:30:00Z")
        #expect(local(inUTC.next(after: at("2026-03-01T00:00:00Z"))) == "2026-03-01T08:30:00+07:00")
    }

    @Test("Asia/Ho_Chi_Minh has no daylight saving time: 01:00 every day of the year is 18:00 UTC")
    func noDaylightSaving() throws {
        let schedule = try cron("0 1 * * *")
        var cursor = at("2026-01-01T00:00:00+07:00")
        var count = 0
        while let next = schedule.next(after: cursor), next < at("2027-01-01T00:00:00+07:00") {
            #expect(utcText(next).hasSuffix("T18:00:00Z"), "\(utcText(next))")
            #expect(next.timeIntervalSince(cursor) <= 86400)
            cursor = next
            count += 1
        }
        #expect(count == 365)
        // Where summer time exists the UTC hour moves; in Ho Chi Minh City it never does. The offset
        // of the zone is +7 at both ends of the year.
        #expect(hoChiMinh.secondsFromGMT(for: at("2026-01-15T00:00:00Z")) == 7 * 3600)
        #expect(hoChiMinh.secondsFromGMT(for: at("2026-07-15T00:00:00Z")) == 7 * 3600)
    }

    @Test("next is strictly after the given time, to the minute")
    func strictlyAfter() throws {
        let schedule = try cron("0 1 * * *")
        #expect(local(schedule.next(after: at("2026-03-01T01:00:00+07:00"))) == "2026-03-02T01:00:00+07:00")
        #expect(local(schedule.next(after: at("2026-03-01T00:59:59+07:00"))) == "2026-03-01T01:00:00+07:00")
        #expect(local(schedule.next(after: at("2026-03-01T01:00:30+07:00"))) == "2026-03-02T01:00:00+07:00")
        let everyMinute = try cron("* * * * *")
        #expect(local(everyMinute.next(after: at("2026-03-01T10:15:00+07:00"))) == "2026-03-01T10:16:00+07:00")
        #expect(local(everyMinute.next(after: at("2026-03-01T10:15:59+07:00"))) == "2026-03-01T10:16:00+07:00")
        #expect(local(everyMinute.next(after: at("2026-12-31T23:59:00+07:00"))) == "2027-01-01T00:00:00+07:00")
    }

    @Test("lists, ranges and steps")
    func listsRangesSteps() throws {
        #expect(try fires("0,30 9 * * *", after: "2026-03-02T00:00:00+07:00", count: 3)
                == ["2026-03-02T09:00:00+07:00", "2026-03-02T09:30:00+07:00", "2026-03-03T09:00:00+07:00"])
        #expect(try fires("0 */6 * * *", after: "2026-03-02T00:00:00+07:00", count: 5)
                == ["2026-03-02T06:00:00+07:00", "2026-03-02T12:00:00+07:00", "2026-03-02T18:00:00+07:00",
                    "2026-03-03T00:00:00+07:00", "2026-03-03T06:00:00+07:00"])
        #expect(try fires("15 8-10 * * *", after: "2026-03-02T00:00:00+07:00", count: 4)
                == ["2026-03-02T08:15:00+07:00", "2026-03-02T09:15:00+07:00", "2026-03-02T10:15:00+07:00", "2026-03-03T08:15:00+07:00"])
        // A stepped range: 10, 25, 40 and 55 minutes past.
        #expect(try fires("10-59/15 0 * * *", after: "2026-03-02T00:00:00+07:00", count: 5)
                == ["2026-03-02T00:10:00+07:00", "2026-03-02T00:25:00+07:00", "2026-03-02T00:40:00+07:00",
                    "2026-03-02T00:55:00+07:00", "2026-03-03T00:10:00+07:00"])
        // N/step starts at N and runs to the end of the range.
        #expect(try fires("5/20 0 * * *", after: "2026-03-02T00:00:00+07:00", count: 4)
                == ["2026-03-02T00:05:00+07:00", "2026-03-02T00:25:00+07:00", "2026-03-02T00:45:00+07:00", "2026-03-03T00:05:00+07:00"])
        // A list mixing a single value, a range and a step.
        #expect(try fires("0 1,3-4,20-23/2 * * *", after: "2026-03-02T00:00:00+07:00", count: 6)
                == ["2026-03-02T01:00:00+07:00", "2026-03-02T03:00:00+07:00", "2026-03-02T04:00:00+07:00",
                    "2026-03-02T20:00:00+07:00", "2026-03-02T22:00:00+07:00", "2026-03-03T01:00:00+07:00"])
    }

    @Test("month and weekday names, in any case")
    func names() throws {
        // 2026-03-02 is a Monday.
        #expect(try fires("0 2 * * mon-fri", after: "2026-03-06T12:00:00+07:00", count: 3)
                == ["2026-03-09T02:00:00+07:00", "2026-03-10T02:00:00+07:00", "2026-03-11T02:00:00+07:00"])
        #expect(try fires("0 2 * * SAT,Sun", after: "2026-03-02T00:00:00+07:00", count: 3)
                == ["2026-03-07T02:00:00+07:00", "2026-03-08T02:00:00+07:00", "2026-03-14T02:00:00+07:00"])
        #expect(try fires("0 0 1 jan,Jul *", after: "2026-03-02T00:00:00+07:00", count: 3)
                == ["2026-07-01T00:00:00+07:00", "2027-01-01T00:00:00+07:00", "2027-07-01T00:00:00+07:00"])
        #expect(try fires("0 0 1 mar-may *", after: "2026-02-02T00:00:00+07:00", count: 4)
                == ["2026-03-01T00:00:00+07:00", "2026-04-01T00:00:00+07:00", "2026-05-01T00:00:00+07:00", "2027-03-01T00:00:00+07:00"])
        #expect(try cron("0 2 * * mon-fri").next(after: at("2026-03-06T12:00:00+07:00"))
                == cron("0 2 * * 1-5").next(after: at("2026-03-06T12:00:00+07:00")))
    }

    @Test("day of week 7 is Sunday, like 0")
    func sundayIsSevenAndZero() throws {
        let sundays = ["2026-03-08T03:00:00+07:00", "2026-03-15T03:00:00+07:00", "2026-03-22T03:00:00+07:00"]
        #expect(try fires("0 3 * * 7", after: "2026-03-02T00:00:00+07:00", count: 3) == sundays)
        #expect(try fires("0 3 * * 0", after: "2026-03-02T00:00:00+07:00", count: 3) == sundays)
        #expect(try fires("0 3 * * sun", after: "2026-03-02T00:00:00+07:00", count: 3) == sundays)
        // 5-7: Friday, Saturday, Sunday.
        #expect(try fires("0 3 * * 5-7", after: "2026-03-02T00:00:00+07:00", count: 4)
                == ["2026-03-06T03:00:00+07:00", "2026-03-07T03:00:00+07:00", "2026-03-08T03:00:00+07:00", "2026-03-13T03:00:00+07:00"])
    }

    @Test("day of month and day of week both restricted: either matches (Vixie cron)")
    func dayOfMonthOrDayOfWeek() throws {
        // The 13th, or any Friday. March 2026: Fridays 6, 13, 20, 27; April: Fridays 3, 10, 17; the 13th is a Monday.
        #expect(try fires("0 0 13 * 5", after: "2026-03-01T00:00:00+07:00", count: 7)
                == ["2026-03-06T00:00:00+07:00", "2026-03-13T00:00:00+07:00", "2026-03-20T00:00:00+07:00",
                    "2026-03-27T00:00:00+07:00", "2026-04-03T00:00:00+07:00", "2026-04-10T00:00:00+07:00",
                    "2026-04-13T00:00:00+07:00"])
        // Only one restricted: that one alone decides.
        #expect(try fires("0 0 13 * *", after: "2026-03-01T00:00:00+07:00", count: 2)
                == ["2026-03-13T00:00:00+07:00", "2026-04-13T00:00:00+07:00"])
        #expect(try fires("0 0 * * 5", after: "2026-03-01T00:00:00+07:00", count: 2)
                == ["2026-03-06T00:00:00+07:00", "2026-03-13T00:00:00+07:00"])
        // A day field starting with * (a step over the whole range) does not count as restricted, as in
        // Vixie cron: odd days that are Mondays (AND), not odd days or Mondays. March 2026: Mondays 2, 9, 16, 23, 30.
        #expect(try fires("0 0 */2 * 1", after: "2026-03-01T00:00:00+07:00", count: 3)
                == ["2026-03-09T00:00:00+07:00", "2026-03-23T00:00:00+07:00", "2026-04-13T00:00:00+07:00"])
        // The 1st when it is a Sunday, Wednesday or Saturday.
        #expect(try fires("0 0 1 * */3", after: "2026-03-01T00:00:00+07:00", count: 3)
                == ["2026-04-01T00:00:00+07:00", "2026-07-01T00:00:00+07:00", "2026-08-01T00:00:00+07:00"])
        // 31 February never exists, but "or a Monday" makes the schedule run on February's Mondays.
        #expect(try fires("0 0 31 2 1", after: "2026-01-01T00:00:00+07:00", count: 3)
                == ["2026-02-02T00:00:00+07:00", "2026-02-09T00:00:00+07:00", "2026-02-16T00:00:00+07:00"])
    }

    @Test("month ends: the 31st skips short months, 29 February waits for a leap year")
    func monthEnds() throws {
        #expect(try fires("0 0 31 * *", after: "2026-01-01T00:00:00+07:00", count: 7)
                == ["2026-01-31T00:00:00+07:00", "2026-03-31T00:00:00+07:00", "2026-05-31T00:00:00+07:00",
                    "2026-07-31T00:00:00+07:00", "2026-08-31T00:00:00+07:00", "2026-10-31T00:00:00+07:00",
                    "2026-12-31T00:00:00+07:00"])
        #expect(try fires("0 0 30 * *", after: "2026-01-31T00:00:00+07:00", count: 2)
                == ["2026-03-30T00:00:00+07:00", "2026-04-30T00:00:00+07:00"])
        #expect(try fires("0 12 29 2 *", after: "2026-01-01T00:00:00+07:00", count: 2)
                == ["2028-02-29T12:00:00+07:00", "2032-02-29T12:00:00+07:00"])
        // The last minute of a month, then the first of the next.
        #expect(try fires("59 23 28-31 2 *", after: "2026-02-27T00:00:00+07:00", count: 2)
                == ["2026-02-28T23:59:00+07:00", "2027-02-28T23:59:00+07:00"])
        #expect(try fires("0 0 1 * *", after: "2026-12-15T00:00:00+07:00", count: 2)
                == ["2027-01-01T00:00:00+07:00", "2027-02-01T00:00:00+07:00"])
    }

    @Test("a schedule that can never run is refused")
    func neverRuns() {
        #expect(refusal("0 0 31 2 *") == "the schedule \"0 0 31 2 *\" never runs (no such date)")
        #expect(refusal("0 0 30 2 *") == "the schedule \"0 0 30 2 *\" never runs (no such date)")
        #expect(refusal("0 0 31 4,6,9,11 *") == "the schedule \"0 0 31 4,6,9,11 *\" never runs (no such date)")
        // 29 February exists (in leap years): accepted.
        #expect(refusal("0 0 29 2 *") == nil)
    }

    @Test("bad fields are refused with the field, the value and the range")
    func badFields() {
        let cases: [(String, String)] = [
            ("0 1 * *", "a schedule has 5 fields (minute hour day-of-month month day-of-week), e.g. \"30 1 * * *\"; got 4"),
            ("0 1 * * * *", "a schedule has 5 fields (minute hour day-of-month month day-of-week), e.g. \"30 1 * * *\"; got 6"),
            ("", "a schedule has 5 fields (minute hour day-of-month month day-of-week), e.g. \"30 1 * * *\"; got 0"),
            ("60 1 * * *", "minute \"60\" is out of range 0–59"),
            ("0 24 * * *", "hour \"24\" is out of range 0–23"),
            ("0 1 0 * *", "day of month \"0\" is out of range 1–31"),
            ("0 1 32 * *", "day of month \"32\" is out of range 1–31"),
            ("0 1 * 13 *", "month \"13\" is out of range 1–12"),
            ("0 1 * 0 *", "month \"0\" is out of range 1–12"),
            ("0 1 * * 8", "day of week \"8\" is out of range 0–7"),
            ("0 1 * foo *", "month \"foo\" is out of range 1–12"),
            ("0 1 * * jan", "day of week \"jan\" is out of range 0–7"),
            ("0 1 * mon *", "month \"mon\" is out of range 1–12"),
            ("x 1 * * *", "minute \"x\" is out of range 0–59"),
            ("*/0 1 * * *", "minute step in \"*/0\" must be a positive number"),
            ("0 */x * * *", "hour step in \"*/x\" must be a positive number"),
            ("30-10 1 * * *", "minute range \"30-10\" runs backwards"),
            ("0 1 * * fri-mon", "day of week range \"fri-mon\" runs backwards"),
            ("0,,30 1 * * *", "empty minute field"),
            ("0 1, * * *", "empty hour field"),
        ]
        for (expression, message) in cases {
            #expect(refusal(expression) == message, "for \"\(expression)\"")
        }
    }

    @Test("latest(after:upTo:): the newest fire time in the window, so a long outage is caught up once")
    func latestCatchesUpOnce() throws {
        let nightly = try cron("0 1 * * *")
        // Last planned run on the 1st; the host was down until the 4th at 14:00: one run, for the
        // 4th's 01:00, not one for each of the 2nd, 3rd and 4th.
        #expect(local(nightly.latest(after: at("2026-03-01T01:00:00+07:00"), upTo: at("2026-03-04T14:00:00+07:00")))
                == "2026-03-04T01:00:00+07:00")
        // Nothing fired since: nil (not due).
        #expect(nightly.latest(after: at("2026-03-04T01:00:00+07:00"), upTo: at("2026-03-04T23:59:00+07:00")) == nil)
        // The window's end is included, its start is not.
        #expect(local(nightly.latest(after: at("2026-03-03T01:00:00+07:00"), upTo: at("2026-03-04T01:00:00+07:00")))
                == "2026-03-04T01:00:00+07:00")
        #expect(nightly.latest(after: at("2026-03-04T01:00:00+07:00"), upTo: at("2026-03-04T01:00:00+07:00")) == nil)
        #expect(nightly.latest(after: at("2026-03-03T01:00:00+07:00"), upTo: at("2026-03-04T00:59:59+07:00")) == nil)
        // A run after its planned time but before the next one: still one due at the next.
        #expect(local(nightly.latest(after: at("2026-03-03T01:00:00+07:00"), upTo: at("2026-03-04T06:00:00+07:00")))
                == "2026-03-04T01:00:00+07:00")
        // A window ending before it starts: nothing.
        #expect(nightly.latest(after: at("2026-03-05T00:00:00+07:00"), upTo: at("2026-03-04T00:00:00+07:00")) == nil)
        // A frequent schedule over a long outage: still only the latest.
        let everyFive = try cron("*/5 * * * *")
        #expect(local(everyFive.latest(after: at("2026-03-01T00:00:00+07:00"), upTo: at("2026-03-08T13:07:10+07:00")))
                == "2026-03-08T13:05:00+07:00")
        // Weekly on Sunday, three weeks down: the last Sunday.
        let weekly = try cron("0 3 * * 0")
        #expect(local(weekly.latest(after: at("2026-03-01T03:00:00+07:00"), upTo: at("2026-03-25T00:00:00+07:00")))
                == "2026-03-22T03:00:00+07:00")
        // Time zones: the same window, the schedule in UTC.
        let nightlyUTC = try cron("0 1 * * *", utc)
        #expect(utcText(nightlyUTC.latest(after: at("2026-03-01T01:00:00Z"), upTo: at("2026-03-04T00:30:00Z")))
                == "2026-03-03T01:00:00Z")
    }

    @Test("description is the expression")
    func describes() throws {
        #expect(try cron("30 1 * * *").description == "30 1 * * *")
        #expect(try cron("30 1 * * *").timeZone.identifier == "Asia/Ho_Chi_Minh")
    }
}
}
