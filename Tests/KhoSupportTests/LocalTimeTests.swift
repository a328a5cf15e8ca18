import Foundation
import Testing
import KhoSupport

// `restore --at` reads the time an operator types: a time with an offset (RFC 3339, or the form kho
// prints) means exactly that instant; a wall-clock time is read in the zone it is given (the one
// DisplayZone resolves: see ZoneTests).

private let vietnam = TimeZone(identifier: "Asia/Ho_Chi_Minh")!
private let utc = TimeZone(identifier: "UTC")!
private let berlin = TimeZone(identifier: "Europe/Berlin")!

private func instant(_ text: String) throws -> Date {
    try #require(Timestamp.parse(text), "bad time in the test: \(text)")
}

@Suite struct LocalTimeTests {
    @Test("a wall-clock time is read in the zone given: the same words are different instants in Hanoi and in UTC")
    func wallClockFollowsZone() throws {
        #expect(LocalTime.parse("2026-11-28 23:00", zone: vietnam) == (try instant("2026-11-28T16:00:00Z")))
        #expect(LocalTime.parse("2026-11-28 23:00", zone: utc) == (try instant("2026-11-28T23:00:00Z")))
        #expect(LocalTime.parse("2026-11-28 23:00:30", zone: vietnam) == (try instant("2026-11-28T16:00:30Z")))
        #expect(LocalTime.parse("2026-11-28T23:00", zone: vietnam) == (try instant("2026-11-28T16:00:00Z")))
        // Summer time where the zone has it: July in Berlin is +02:00, January +01:00.
        #expect(LocalTime.parse("2026-07-01 12:00", zone: berlin) == (try instant("2026-07-01T10:00:00Z")))
        #expect(LocalTime.parse("2026-01-01 12:00", zone: berlin) == (try instant("2026-01-01T11:00:00Z")))
    }

    @Test("an offset in the text wins over the zone")
    func offsetWins() throws {
        let expected = try instant("2026-11-28T16:00:00Z")
        for zone in [vietnam, utc, berlin] {
            #expect(LocalTime.parse("2026-11-28T23:00:00+07:00", zone: zone) == expected)
            #expect(LocalTime.parse("2026-11-28T16:00:00Z", zone: zone) == expected)
            #expect(LocalTime.parse("2026-11-28T16:00:00.250Z", zone: zone) == expected.addingTimeInterval(0.25))
        }
    }

    @Test("a date alone is its first second in the zone")
    func dateOnly() throws {
        #expect(LocalTime.parse("2026-11-20", zone: vietnam) == (try instant("2026-11-19T17:00:00Z")))
        #expect(LocalTime.parse("2026-11-20", zone: utc) == (try instant("2026-11-20T00:00:00Z")))
    }

    @Test("the form kho prints, and an offset after a space or without seconds, is read back as that instant", arguments: [
        "2026-11-28 23:00:00 +07", "2026-11-28 23:00 +07:00", "2026-11-28 23:00+07:00", "2026-11-28T23:00+07",
        "2026-11-28 23:00:00 +0700", "2026-11-28 16:00:00 +00", "2026-11-28 16:00Z", "2026-11-28 16:00:00 Z",
        "2026-11-28 11:00:00 -05", "2026-11-28 21:30:00 +05:30",
    ])
    func printedFormReadsBack(text: String) throws {
        let expected = try instant("2026-11-28T16:00:00Z")
        for zone in [vietnam, utc, berlin] {
            #expect(LocalTime.parse(text, zone: zone) == expected, "\(text) in \(zone.identifier)")
        }
        #expect(LocalTime.carriesOffset(text))
    }

    @Test("a time kho printed parses back to the same second, in every zone")
    func roundTrip() throws {
        let date = try instant("2026-03-29T01:30:45Z")
        for zone in [vietnam, utc, berlin, TimeZone(identifier: "Asia/Kolkata")!, TimeZone(identifier: "America/St_Johns")!] {
            let text = ZonedTime.format(date, in: zone)
            #expect(LocalTime.parse(text, zone: vietnam) == date, "\(text)")
        }
    }

    @Test("a wall-clock time has no offset of its own")
    func noOffset() {
        for text in ["2026-11-28 23:00", "2026-11-28", "2026-11-28T23:00:30", "tomorrow"] {
            #expect(!LocalTime.carriesOffset(text), "\(text)")
        }
    }

    @Test("text that is not a time, or a day that does not exist, is refused", arguments: [
        "", "yesterday", "2026-11-28 23", "2026-11-28 23:00:00:00", "2026-11-28  23:00", "2026-02-30", "2026-13-01",
        "2026-11-28 24:00", "2026-11-28 23:60", "26-11-28", "2026-1-28", "２０２６-11-28", "2026-11-28 23:00 +7",
        "2026-11-28 23:00 +07:0", "2026-11-28 23:00 +15", "2026-11-28 23:00 +07:60", "2026-11-28 23:00  +07", "2026-11-28 +07",
        "2026-11-28 23:00 ICT", "2026-11-28 23:00 +07 (Asia/Ho_Chi_Minh)",
    ])
    func refused(text: String) {
        #expect(LocalTime.parse(text, zone: vietnam) == nil)
    }

    @Test("the usage error names the option, the text and the forms that are accepted")
    func usageError() {
        let error = #expect(throws: KhoError.self) { try LocalTime.parse("tomorrow", option: "--at", zone: vietnam) }
        #expect(error?.kind == .usage)
        #expect(error?.message.hasPrefix("--at tomorrow is not a time: write e.g. ") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("2026-11-28T23:00:00+07:00") == true)
        #expect(error?.message.contains("\"2026-11-28 23:00\"") == true)
    }
}
