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
