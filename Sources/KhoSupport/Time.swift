import Foundation
import Glibc

/// RFC 3339 times with nanoseconds in UTC, the only time format written into a repository.
public enum Timestamp {
    public static func format(_ date: Date) -> String {
        // A Date counts from 2001; converting to 1970 first would round away its last bit.
        let sinceReference = date.timeIntervalSinceReferenceDate
        var whole = sinceReference.rounded(.down)
        var nanos = Int(((sinceReference - whole) * 1e9).rounded())
        if nanos >= 1_000_000_000 { whole += 1; nanos -= 1_000_000_000 }
        var time = time_t(whole) + 978_307_200
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), nanos)
    }

    public static func parse(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        // ISO8601DateFormatter keeps only milliseconds; read the fraction ourselves.
        var base = text
        var fraction = 0.0
        if let dot = text.firstIndex(of: "."), let zone = text[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }) {
            fraction = Double("0" + text[dot..<zone]) ?? 0
            base = String(text[..<dot]) + String(text[zone...])
        }
        formatter.formatOptions = [.withInternetDateTime]
        guard let date = formatter.date(from: base) else { return nil }
        return date.addingTimeInterval(fraction)
    }
}

/// The time kho believes it is. Real time, unless KHO_TEST_NOW (tests only: an RFC 3339 time)
/// says otherwise, so that a test can simulate weeks of nightly runs in seconds.
public enum Clock {
    public static var now: Date {
        if let text = TestKnobs.value("KHO_TEST_NOW"), let date = Timestamp.parse(text) { return date }
        return Date()
    }
    public static var isSimulated: Bool { TestKnobs.value("KHO_TEST_NOW") != nil }
}

/// Times an operator types (`restore --at`): RFC 3339 with its offset, or a wall-clock time read in
/// this machine's time zone (TZ, else /etc/localtime) — operators type the time on their own clock,
/// and a server's zone is the one its operators live in.
public enum LocalTime {
    /// The accepted forms, for messages and help.
    public static let examples = "\"2026-11-28 23:00\", \"2026-11-28 23:00:30\" or 2026-11-28 (this machine's time zone), or RFC 3339 with an offset such as 2026-11-28T23:00:00+07:00"

    /// The machine's zone: TZ when set, else /etc/localtime.
    public static var systemZone: TimeZone { TimeZone.current }

    /// The time `text` names, or nil when it is none of the accepted forms. A date alone is its
    /// first second (00:00:00).
    public static func parse(_ text: String, zone: TimeZone = systemZone) -> Date? {
        if let date = Timestamp.parse(text) { return date }
        let parts = text.split(separator: text.contains("T") ? "T" : " ", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        let day = parts[0].split(separator: "-", omittingEmptySubsequences: false)
        guard day.count == 3, day[0].count == 4, day[1].count == 2, day[2].count == 2 else { return nil }
        let clock = parts.count == 2 ? parts[1].split(separator: ":", omittingEmptySubsequences: false) : []
        guard parts.count == 1 || clock.count == 2 || clock.count == 3, clock.allSatisfy({ $0.count == 2 }) else { return nil }
        let fields = (day + clock).map { field -> Int? in field.allSatisfy(\.isASCII) && field.allSatisfy(\.isNumber) ? Int(field) : nil }
        guard fields.allSatisfy({ $0 != nil }) else { return nil }
        let numbers = fields.map { $0! }
        var components = DateComponents()
        components.year = numbers[0]
        components.month = numbers[1]
        components.day = numbers[2]
        components.hour = numbers.count > 3 ? numbers[3] : 0
        components.minute = numbers.count > 4 ? numbers[4] : 0
        components.second = numbers.count > 5 ? numbers[5] : 0
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        guard let date = calendar.date(from: components) else { return nil }
        // Calendar rolls 2026-02-30 over into March; a day or hour that does not exist is a typo.
        let back = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        guard back.year == components.year, back.month == components.month, back.day == components.day,
              back.hour == components.hour, back.minute == components.minute, back.second == components.second else { return nil }
        return date
    }

    /// As `parse`, but a text that is not a time is a usage error naming `option` and the forms.
    public static func parse(_ text: String, option: String, zone: TimeZone = systemZone) throws -> Date {
        guard let date = parse(text, zone: zone) else { throw notATime(text, option: option) }
        return date
    }

    /// The usage error for a text that is not a time, with the forms that are.
    public static func notATime(_ text: String, option: String) -> KhoError {
        KhoError(.usage, "\(option) \(text) is not a time: write e.g. \(examples).")
    }
}
