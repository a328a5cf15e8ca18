import Foundation
import KhoSupport

/// Which snapshots to keep. A pure function of the snapshots' times and tags and these rules, so
/// that every decision, with its reason, can be shown before anything is removed.
public struct RetentionPolicy: Sendable, Equatable, Codable {
    public var last: Int = 0
    public var hourly: Int = 0
    public var daily: Int = 0
    public var weekly: Int = 0
    public var monthly: Int = 0
    public var yearly: Int = 0
    /// Keep every snapshot taken within this many seconds before the newest one of its group.
    public var within: TimeInterval?
    /// Keep every snapshot carrying one of these tags.
    public var tags: [String] = []
    /// Calendar buckets (days, weeks…) are counted in this time zone.
    public var timeZone: String = DisplayZone.defaultIdentifier

    public init() {}

    public var isEmpty: Bool {
        last == 0 && hourly == 0 && daily == 0 && weekly == 0 && monthly == 0 && yearly == 0 && within == nil && tags.isEmpty
    }
}

/// A snapshot's fate and the rules that decided it.
public struct RetentionDecision: Sendable, Codable {
    public var snapshotID: String
    public var time: Date
    public var keep: Bool
    public var reasons: [String]
}

public enum Retention {
    /// Applies `policy` to one group of snapshots (same host and source). Every snapshot gets a
    /// decision; a snapshot nothing keeps is removed with the reason "no rule keeps it".
    public static func apply(_ policy: RetentionPolicy, to snapshots: [(id: String, time: Date, tags: [String])]) -> [RetentionDecision] {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: policy.timeZone) ?? DisplayZone.defaultZone
        calendar.firstWeekday = 2
        calendar.minimumDaysInFirstWeek = 4
        // Newest first; equal times by ID so that the result does not depend on input order.
        let ordered = snapshots.sorted { ($0.time, $0.id) > ($1.time, $1.id) }
        var decisions = ordered.map { RetentionDecision(snapshotID: $0.id, time: $0.time, keep: false, reasons: []) }

        if policy.last > 0 {
            for i in 0..<min(policy.last, ordered.count) {
                decisions[i].keep = true
                decisions[i].reasons.append("last \(i + 1) of \(policy.last)")
            }
        }

        typealias Bucket = (Date) -> String
        let buckets: [(name: String, count: Int, key: Bucket)] = [
            ("hourly", policy.hourly, { d in
                let c = calendar.dateComponents([.year, .month, .day, .hour], from: d)
                return "\(c.year!)-\(c.month!)-\(c.day!) \(c.hour!)h"
            }),
            ("daily", policy.daily, { d in
                let c = calendar.dateComponents([.year, .month, .day], from: d)
                return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
            }),
            ("weekly", policy.weekly, { d in
                let c = calendar.dateComponents([.yearForWeekOfYear, .weekOfYear], from: d)
                return String(format: "%04d-W%02d", c.yearForWeekOfYear!, c.weekOfYear!)
            }),
            ("monthly", policy.monthly, { d in
                let c = calendar.dateComponents([.year, .month], from: d)
                return String(format: "%04d-%02d", c.year!, c.month!)
            }),
            ("yearly", policy.yearly, { d in
                String(calendar.component(.year, from: d))
            }),
        ]
        for bucket in buckets where bucket.count > 0 {
            var seen = Set<String>()
            for (i, snapshot) in ordered.enumerated() {
                guard seen.count < bucket.count else { break }
                let key = bucket.key(snapshot.time)
                // The newest snapshot of each period is the one kept for it.
                if seen.insert(key).inserted {
                    decisions[i].keep = true
                    decisions[i].reasons.append("\(bucket.name) \(key) (\(seen.count) of \(bucket.count))")
                }
            }
        }

        if let within = policy.within, let newest = ordered.first?.time {
            for (i, snapshot) in ordered.enumerated() where newest.timeIntervalSince(snapshot.time) <= within {
                decisions[i].keep = true
                decisions[i].reasons.append("within \(DurationFormat.describe(within)) of the newest")
            }
        }

        if !policy.tags.isEmpty {
            for (i, snapshot) in ordered.enumerated() {
                let matching = snapshot.tags.filter(policy.tags.contains)
                if !matching.isEmpty {
                    decisions[i].keep = true
                    decisions[i].reasons.append("tagged \(matching.joined(separator: ","))")
                }
            }
        }

        for i in decisions.indices where !decisions[i].keep {
            decisions[i].reasons = ["no rule keeps it"]
        }
        return decisions
    }
}

package enum DurationFormat {
    /// Parses `90s`, `15m`, `2h`, `7d`, `2w`, combinations such as `1h30m`, or plain seconds;
    /// nil when the text is none of these.
    package static func parse(_ text: String) -> TimeInterval? {
        if let seconds = Double(text) { return seconds }
        var total = 0.0
        var number = ""
        for c in text {
            if c.isNumber || c == "." {
                number.append(c)
                continue
            }
            let unit: Double
            switch c {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            case "w": unit = 7 * 86400
            default: return nil
            }
            guard let value = Double(number) else { return nil }
            total += value * unit
            number = ""
        }
        return number.isEmpty && !text.isEmpty ? total : nil
    }

    package static func describe(_ seconds: TimeInterval) -> String {
        let s = Int(seconds)
        if s % 86400 == 0 { return "\(s / 86400)d" }
        if s % 3600 == 0 { return "\(s / 3600)h" }
        if s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }
}
