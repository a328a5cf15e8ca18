import Foundation
import KhoCore
import KhoSupport

/// A cron schedule (minute hour day-of-month month day-of-week) evaluated in a time zone.
/// Supports `*`, lists, ranges, steps, and month and weekday names; day-of-week 0 and 7 are Sunday.
/// When both day fields are restricted a day matches either, as in Vixie cron.
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    public let expression: String
    public let timeZone: TimeZone
    private let minutes: Set<Int>
    private let hours: Set<Int>
    private let days: Set<Int>
    private let months: Set<Int>
    private let weekdays: Set<Int>
    private let daysRestricted: Bool
    private let weekdaysRestricted: Bool

    public var description: String { expression }

    public struct ParseError: Error, Sendable {
        public var message: String
    }

    public init(_ expression: String, timeZone: TimeZone) throws {
        self.expression = expression
        self.timeZone = timeZone
        let fields = expression.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(message: "a schedule has 5 fields (minute hour day-of-month month day-of-week), e.g. \"30 1 * * *\"; got \(fields.count)")
        }
        minutes = try CronSchedule.field(fields[0], name: "minute", range: 0...59, names: [:])
        hours = try CronSchedule.field(fields[1], name: "hour", range: 0...23, names: [:])
        days = try CronSchedule.field(fields[2], name: "day of month", range: 1...31, names: [:])
        let monthNames = ["jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12]
        months = try CronSchedule.field(fields[3], name: "month", range: 1...12, names: monthNames)
        let dayNames = ["sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6]
        weekdays = Set(try CronSchedule.field(fields[4], name: "day of week", range: 0...7, names: dayNames).map { $0 % 7 })
        // As in Vixie cron, a field that starts with * (also */2) counts as unrestricted for the OR rule.
        daysRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
        // A schedule that can never fire (30 February) is an error, not a silent never.
        guard next(after: Date(timeIntervalSince1970: 1_700_000_000), limit: 8 * 366 * 86400) != nil else {
            throw ParseError(message: "the schedule \"\(expression)\" never runs (no such date)")
        }
    }

    private static func field(_ text: String, name: String, range: ClosedRange<Int>, names: [String: Int]) throws -> Set<Int> {
        var result = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            var body = Substring(part)
            var step = 1
            if let slash = part.firstIndex(of: "/") {
                guard let value = Int(part[part.index(after: slash)...]), value > 0 else {
                    throw ParseError(message: "\(name) step in \"\(part)\" must be a positive number")
                }
                step = value
                body = part[..<slash]
            }
            func value(_ token: Substring) throws -> Int {
                if let number = Int(token), range.contains(number) { return number }
                if let named = names[token.lowercased()] { return named }
                throw ParseError(message: "\(name) \"\(token)\" is out of range \(range.lowerBound)–\(range.upperBound)")
            }
            var low = range.lowerBound
            var high = range.upperBound
            if body == "*" {
            } else if let dash = body.firstIndex(of: "-") {
                low = try value(body[..<dash])
                high = try value(body[body.index(after: dash)...])
                guard low <= high else { throw ParseError(message: "\(name) range \"\(body)\" runs backwards") }
            } else if !body.isEmpty {
                low = try value(body)
                high = part.contains("/") ? range.upperBound : low
            } else {
                throw ParseError(message: "empty \(name) field")
            }
            result.formUnion(stride(from: low, through: high, by: step))
        }
        return result
    }

    private var calendar: Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar
    }

    private func dayMatches(_ components: DateComponents) -> Bool {
        let dayOK = days.contains(components.day!)
        let weekdayOK = weekdays.contains(components.weekday! - 1)
        if daysRestricted && weekdaysRestricted { return dayOK || weekdayOK }
        return dayOK && weekdayOK
    }

    /// The first time strictly after `date` at which the schedule fires.
    public func next(after date: Date, limit: TimeInterval = 5 * 366 * 86400) -> Date? {
        let calendar = self.calendar
        let end = date.addingTimeInterval(limit)
        var components = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: date.addingTimeInterval(60))
        guard var t = calendar.date(from: components) else { return nil }
        while t <= end {
            components = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
            if !months.contains(components.month!) {
                var c = DateComponents(year: components.year, month: components.month! + 1, day: 1, hour: 0, minute: 0)
                if c.month! > 12 { c.year! += 1; c.month = 1 }
                t = calendar.date(from: c)!
                continue
            }
            if !dayMatches(components) {
                t = calendar.date(byAdding: .day, value: 1, to: calendar.startOfDay(for: t))!
                continue
            }
            if !hours.contains(components.hour!) {
                let hourStart = calendar.date(from: DateComponents(year: components.year, month: components.month, day: components.day, hour: components.hour, minute: 0))!
                t = hourStart.addingTimeInterval(3600)
                continue
            }
            if !minutes.contains(components.minute!) {
                t = t.addingTimeInterval(60)
                continue
            }
            return t
        }
        return nil
    }

    /// The latest time at or before `now` and after `since` at which the schedule fired, if any:
    /// a run missed while the host was down is caught up once, for its latest planned time.
    public func latest(after since: Date, upTo now: Date) -> Date? {
        var last: Date?
        var cursor = since
        while let fire = next(after: cursor, limit: max(60, now.timeIntervalSince(cursor) + 60)), fire <= now {
            last = fire
            cursor = fire
        }
        return last
    }
}
