import Foundation
import Testing
import KhoSupport

// Which zone kho shows and reads times in (DisplayZone), and how it writes them (ZonedTime): the
// zone is chosen by --time-zone, else KHO_TIME_ZONE, else the policies' time-zone, else
// Asia/Ho_Chi_Minh — never the machine's TZ — and every time printed carries its offset.

private let vietnam = TimeZone(identifier: "Asia/Ho_Chi_Minh")!
private let bangkok = TimeZone(identifier: "Asia/Bangkok")!
private let berlin = TimeZone(identifier: "Europe/Berlin")!

private func instant(_ text: String) throws -> Date {
    try #require(Timestamp.parse(text), "bad time in the test: \(text)")
}

@Suite struct DisplayZoneTests {
    @Test("the option wins over KHO_TIME_ZONE, which wins over the policies, which win over the default")
    func order() throws {
        let env = ["KHO_TIME_ZONE": "Europe/Berlin"]
        #expect(try DisplayZone.resolve(option: "UTC", policyZones: [bangkok], environment: env).secondsFromGMT() == 0)
        #expect(try DisplayZone.resolve(option: nil, policyZones: [bangkok], environment: env).identifier == "Europe/Berlin")
        #expect(try DisplayZone.resolve(option: nil, policyZones: [bangkok], environment: [:]).identifier == "Asia/Bangkok")
        #expect(try DisplayZone.resolve(option: nil, policyZones: [], environment: [:]).identifier == "Asia/Ho_Chi_Minh")
        // An empty option or variable is as good as none.
        #expect(try DisplayZone.resolve(option: "", policyZones: [], environment: ["KHO_TIME_ZONE": ""]).identifier == "Asia/Ho_Chi_Minh")
    }

    @Test("policies in different zones agree on none: the default is used")
    func policiesDisagree() throws {
        #expect(try DisplayZone.resolve(option: nil, policyZones: [bangkok, berlin], environment: [:]).identifier == "Asia/Ho_Chi_Minh")
        #expect(try DisplayZone.resolve(option: nil, policyZones: [berlin, berlin], environment: [:]).identifier == "Europe/Berlin")
    }

    @Test("the machine's zone (TZ) is never the default")
    func notTheMachinesZone() throws {
        // Whatever TZ the tests run with, nothing set means Asia/Ho_Chi_Minh.
        #expect(try DisplayZone.resolve(option: nil, environment: ["TZ": "UTC"]).identifier == DisplayZone.defaultIdentifier)
        #expect(DisplayZone.defaultIdentifier == "Asia/Ho_Chi_Minh")
    }

    @Test("a zone that does not exist is a usage error naming where it came from and what to write")
    func unknownZone() {
        let option = #expect(throws: KhoError.self) { try DisplayZone.resolve(option: "Mars/Olympus", environment: [:]) }
        #expect(option?.kind == .usage)
        #expect(option?.message.hasPrefix("--time-zone Mars/Olympus is not a known time zone") == true, "\(option?.message ?? "")")
        #expect(option?.message.contains("Asia/Ho_Chi_Minh") == true)
        let env = #expect(throws: KhoError.self) { try DisplayZone.resolve(option: nil, environment: ["KHO_TIME_ZONE": "Hanoi"]) }
        #expect(env?.kind == .usage)
        #expect(env?.message.hasPrefix("KHO_TIME_ZONE Hanoi is not a known time zone") == true, "\(env?.message ?? "")")
        // The option is checked even when it would win over a bad variable, and the other way round.
        #expect(throws: KhoError.self) { try DisplayZone.resolve(option: "Nowhere", environment: ["KHO_TIME_ZONE": "UTC"]) }
    }

    @Test("UTC is called UTC, whatever Foundation calls it")
    func utcName() throws {
        #expect(DisplayZone.name(of: try DisplayZone.named("UTC", what: "--time-zone")) == "UTC")
        #expect(DisplayZone.name(of: vietnam) == "Asia/Ho_Chi_Minh")
    }
}

@Suite struct ZonedTimeTests {
    @Test("a time is written in the zone, to the second, with its offset")
    func format() throws {
        let date = try instant("2026-11-28T16:00:00.900Z")
        #expect(ZonedTime.format(date, in: vietnam) == "2026-11-28 23:00:00 +07")
        #expect(ZonedTime.format(date, in: TimeZone(identifier: "UTC")!) == "2026-11-28 16:00:00 +00")
        #expect(ZonedTime.format(date, in: TimeZone(identifier: "Asia/Kolkata")!) == "2026-11-28 21:30:00 +05:30")
        #expect(ZonedTime.format(date, in: TimeZone(identifier: "America/St_Johns")!) == "2026-11-28 12:30:00 -03:30")
        #expect(ZonedTime.formatNamed(date, in: vietnam) == "2026-11-28 23:00:00 +07 (Asia/Ho_Chi_Minh)")
        #expect(ZonedTime.formatNamed(date, in: TimeZone(identifier: "UTC")!) == "2026-11-28 16:00:00 +00 (UTC)")
    }

    @Test("summer time shows in the offset")
    func summerTime() throws {
        #expect(ZonedTime.format(try instant("2026-07-01T10:00:00Z"), in: berlin) == "2026-07-01 12:00:00 +02")
        #expect(ZonedTime.format(try instant("2026-01-01T10:00:00Z"), in: berlin) == "2026-01-01 11:00:00 +01")
    }

    @Test("the same instant reads the same in every zone once its offset is taken into account")
    func sameInstant() throws {
        let date = try instant("2026-11-01T19:00:00Z")
        let texts = [vietnam, bangkok, berlin, TimeZone(identifier: "UTC")!].map { ZonedTime.format(date, in: $0) }
        #expect(texts == ["2026-11-02 02:00:00 +07", "2026-11-02 02:00:00 +07", "2026-11-01 20:00:00 +01", "2026-11-01 19:00:00 +00"])
    }

    @Test("offsets", arguments: [(0, "+00"), (25200, "+07"), (-18000, "-05"), (19800, "+05:30"), (-12600, "-03:30"), (25580, "+07:06:20")])
    func offsets(seconds: Int, text: String) {
        #expect(ZonedTime.offsetText(seconds) == text)
    }
}
