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

/// The zone kho shows times in and reads typed times in, chosen in one place for every command:
/// `--time-zone ZONE`, else the environment's `KHO_TIME_ZONE`, else the time zone of the policies
/// the command works on (when they all have the same), else Asia/Ho_Chi_Minh — kho's users are in
/// Vietnam, and a server kept in UTC must not shift every time an operator reads by seven hours.
/// The machine's own zone (TZ, /etc/localtime) is never used.
public enum DisplayZone {
    /// The zone when nothing else says: where kho's users are.
    public static let defaultIdentifier = "Asia/Ho_Chi_Minh"
    public static var defaultZone: TimeZone { TimeZone(identifier: defaultIdentifier)! }
    /// The environment variable that chooses the zone for every command.
    public static let variable = "KHO_TIME_ZONE"

    /// The zone named `name`, or a usage error naming `what` (e.g. "--time-zone", "KHO_TIME_ZONE").
    public static func named(_ name: String, what: String) throws -> TimeZone {
        // The names a policy's time-zone accepts (the tz database's, as the system has it).
        if let zone = TimeZone(identifier: name) { return zone }
        throw KhoError(.usage, "\(what) \(name) is not a known time zone: give a name of the tz database such as Asia/Ho_Chi_Minh, Asia/Bangkok or UTC.")
    }

    /// The environment's choice: KHO_TIME_ZONE when set and not empty.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> TimeZone? {
        guard let name = environment[variable], !name.isEmpty else { return nil }
        return try named(name, what: variable)
    }

    /// The zone a command uses: `option` (the command's --time-zone), else KHO_TIME_ZONE, else the
    /// zone every one of `policyZones` has (the policies the command works on), else Asia/Ho_Chi_Minh.
    public static func resolve(option: String?, policyZones: [TimeZone] = [],
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws -> TimeZone {
        if let option, !option.isEmpty { return try named(option, what: "--time-zone") }
        if let zone = try fromEnvironment(environment) { return zone }
        if let first = policyZones.first, policyZones.allSatisfy({ $0.identifier == first.identifier }) { return first }
        return defaultZone
    }

    /// The zone's name as people read it: its tz database name, and UTC for the zone Foundation
    /// calls GMT (what `UTC` and `Etc/UTC` give).
    public static func name(of zone: TimeZone) -> String {
        zone.identifier == "GMT" ? "UTC" : zone.identifier
    }
}

/// Times written for people: the wall-clock time in a zone, always with its UTC offset, so that a
/// listing read on a server in another zone (or pasted into a ticket) means one instant.
public enum ZonedTime {
    /// `2026-11-28 23:00:00 +07`: to the second (truncated), with the offset (`+05:30` where it
    /// has minutes, `+00` for UTC). `restore --at` reads this form back.
    public static func format(_ date: Date, in zone: TimeZone) -> String {
        let offset = zone.secondsFromGMT(for: date)
        var time = time_t((date.timeIntervalSince1970).rounded(.down)) + time_t(offset)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec)) + offsetText(offset)
    }

    /// As `format`, followed by the zone's name: `2026-11-28 23:00:00 +07 (Asia/Ho_Chi_Minh)`, for
    /// plans and headers where there is room.
    public static func formatNamed(_ date: Date, in zone: TimeZone) -> String {
        format(date, in: zone) + " (\(DisplayZone.name(of: zone)))"
    }

    /// `+07`, `-03:30`, `+00`; seconds only where a (historical) offset has them.
    public static func offsetText(_ seconds: Int) -> String {
        let sign = seconds < 0 ? "-" : "+"
        let total = abs(seconds)
        var text = sign + String(format: "%02d", total / 3600)
        if total % 3600 != 0 { text += String(format: ":%02d", (total % 3600) / 60) }
        if total % 60 != 0 { text += String(format: ":%02d", total % 60) }
        return text
    }
}

/// Times an operator types (`restore --at`): a wall-clock time with an offset (RFC 3339, or the
/// form kho prints: `2026-11-28 23:00:00 +07`), which means exactly that instant, or without one,
/// read in the zone the command resolved (`DisplayZone`).
public enum LocalTime {
    /// The accepted forms, for messages and help.
    public static let examples = "\"2026-11-28 23:00\", \"2026-11-28 23:00:30\" or 2026-11-28 (in the zone of --time-zone, KHO_TIME_ZONE, else Asia/Ho_Chi_Minh), or with an offset such as \"2026-11-28 23:00 +07\" or 2026-11-28T23:00:00+07:00"

    /// The time `text` names, or nil when it is none of the accepted forms. A date alone is its
    /// first second (00:00:00) in `zone`; a time with an offset ignores `zone`.
    public static func parse(_ text: String, zone: TimeZone) -> Date? {
        if let date = Timestamp.parse(text) { return date }
        let separator: Character = text.contains("T") ? "T" : " "
        guard let split = text.firstIndex(of: separator) else { return wallClock(day: Substring(text), clock: nil, zone: zone) }
        let day = text[..<split]
        var rest = text[text.index(after: split)...]
        // An offset after the clock: Z, +HH, +HH:MM or +HHMM (or -), with or without one space.
        var offset: Int?
        if let start = rest.firstIndex(where: { $0 == "+" || $0 == "-" || $0 == "Z" || $0 == " " }) {
            var zoneText = rest[start...]
            rest = rest[..<start]
            if zoneText.first == " " { zoneText = zoneText.dropFirst() }
            guard let seconds = offsetSeconds(zoneText) else { return nil }
            offset = seconds
        }
        guard !rest.isEmpty else { return nil }
        guard let offset else { return wallClock(day: day, clock: rest, zone: zone) }
        guard let fixed = TimeZone(secondsFromGMT: offset) else { return nil }
        return wallClock(day: day, clock: rest, zone: fixed)
    }

    /// Seconds east of UTC for `Z`, `+HH`, `+HH:MM` or `+HHMM` (or `-`); nil for anything else.
    static func offsetSeconds(_ text: Substring) -> Int? {
        if text == "Z" { return 0 }
        guard let sign = text.first, sign == "+" || sign == "-" else { return nil }
        let body = Array(text.dropFirst())
        let digits: [Character]
        switch body.count {
        case 2, 4: digits = body
        case 5 where body[2] == ":": digits = Array(body[0..<2] + body[3..<5])
        default: return nil
        }
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        let hours = Int(String(digits[0..<2]))!
        let minutes = digits.count == 4 ? Int(String(digits[2..<4]))! : 0
        guard hours <= 14, minutes < 60 else { return nil }
        return (sign == "-" ? -1 : 1) * (hours * 3600 + minutes * 60)
    }

    /// YYYY-MM-DD and, when given, HH:MM or HH:MM:SS, read in `zone`.
    static func wallClock(day dayText: Substring, clock clockText: Substring?, zone: TimeZone) -> Date? {
        let day = dayText.split(separator: "-", omittingEmptySubsequences: false)
        guard day.count == 3, day[0].count == 4, day[1].count == 2, day[2].count == 2 else { return nil }
        let clock = clockText.map { $0.split(separator: ":", omittingEmptySubsequences: false) } ?? []
        guard clockText == nil || clock.count == 2 || clock.count == 3, clock.allSatisfy({ $0.count == 2 }) else { return nil }
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

    /// Whether `text` is a time with its own offset (or Z), which no zone changes.
    public static func carriesOffset(_ text: String) -> Bool {
        guard let one = parse(text, zone: TimeZone(secondsFromGMT: 0)!) else { return false }
        return parse(text, zone: TimeZone(secondsFromGMT: 3600)!) == one
    }

    /// As `parse`, but a text that is not a time is a usage error naming `option` and the forms.
    public static func parse(_ text: String, option: String, zone: TimeZone) throws -> Date {
        guard let date = parse(text, zone: zone) else { throw notATime(text, option: option) }
        return date
    }

    /// The usage error for a text that is not a time, with the forms that are.
    public static func notATime(_ text: String, option: String) -> KhoError {
        KhoError(.usage, "\(option) \(text) is not a time: write e.g. \(examples).")
    }
}
