import Foundation
import KhoSupport

/// Filters a `mariadb-dump --databases` dump of one database on its way into the `mariadb` client,
/// so that no statement of it reaches a database other than the target:
///
/// - `CREATE DATABASE … \`from\` …` is dropped: kho creates the database itself, with the recorded
///   character set, collation and comment.
/// - `USE \`from\`;` becomes `USE \`to\`;`.
/// - `ALTER DATABASE \`from\` CHARACTER SET … COLLATE … ;` — what mariadb-dump writes around a
///   trigger, routine or event whose database collation differs from the database's, to create it
///   with its own — names `to` instead, so it changes the copy and never the original.
/// - With `disableEvents` (a copy under another name), an event created ENABLE is created DISABLE,
///   so that a copy never runs production's scheduled jobs; `disabledEvents` names them.
///
/// Only these line forms, exactly as mariadb-dump writes them at the start of a line, are read; a
/// line of one of the first three forms that names any other database is refused (the snapshot
/// holds one database: such a line did not come from kho's dump of it). Names are read as quoted
/// identifiers (a doubled backquote is one), so a name with a backquote, a space or a newline is
/// matched whole. Everything else passes through in place, unbuffered.
final class DatabaseNameFilter {
    /// The dump's own database: given by the manifest, or (a dump stored without one) the first
    /// database the dump names.
    private(set) var from: String?
    let to: String
    /// nil: decided once the dump named its database, by whether `finalName` is another name.
    private var disableEvents: Bool?
    private let finalName: String
    /// The events whose ENABLE this filter turned into DISABLE, in dump order.
    private(set) var disabledEvents: [String] = []
    /// The start of the current line, held back while it may be a line to rewrite.
    private var line: [UInt8] = []
    /// Whether the current line began at a line start and may still be a line to rewrite.
    private var holding = true
    /// The held line starts with one of the prefixes: it is held, across line ends, until decided.
    private var candidate = false
    /// A held statement longer than this is not one mariadb-dump writes for the forms read here.
    static let limit = 1 << 20

    private enum Form: CaseIterable {
        case createDatabase, use, alterDatabase, event
        var prefix: [UInt8] {
            switch self {
            case .createDatabase: return Array("CREATE DATABASE ".utf8)
            case .use: return Array("USE ".utf8)
            case .alterDatabase: return Array("ALTER DATABASE ".utf8)
            case .event: return Array("/*!50106 CREATE*/ ".utf8)
            }
        }
    }

    private enum Decision {
        case needMore
        case write([UInt8])
    }

    /// `from` nil: the dump names its database first (a dump stored without a manifest); events are
    /// then disabled when that name is not `finalName`. `finalName` is the database's name once
    /// restored (`to` is the name loaded into, a scratch name for --replace).
    init(from: String?, to: String, disableEvents: Bool? = false, finalName: String? = nil) {
        self.from = from
        self.to = to
        self.disableEvents = disableEvents
        self.finalName = finalName ?? to
    }

    private let forms = Form.allCases

    func process(_ chunk: UnsafeRawBufferPointer, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var i = 0
        var passFrom = 0
        while i < chunk.count {
            if holding {
                let byte = chunk[i]
                line.append(byte)
                i += 1
                passFrom = i
                if !candidate, forms.contains(where: { line == $0.prefix }) { candidate = true }
                if candidate {
                    guard byte == 0x0a else {
                        if line.count > DatabaseNameFilter.limit { throw unreadable() }
                        continue
                    }
                    if case .write(let bytes) = try decide(atEnd: false) {
                        try bytes.withUnsafeBytes { try write($0) }
                        line.removeAll(keepingCapacity: true)
                        candidate = false
                    }
                } else if byte == 0x0a {
                    try line.withUnsafeBytes { try write($0) }
                    line.removeAll(keepingCapacity: true)
                } else if !forms.contains(where: { DatabaseNameFilter.mayStart(line, $0.prefix) }) {
                    try line.withUnsafeBytes { try write($0) }
                    line.removeAll(keepingCapacity: true)
                    holding = false
                }
                continue
            }
            // Inside a line that stays as it is: pass everything up to its end through.
            if let newline = chunk[i...].firstIndex(of: 0x0a) {
                i = newline + 1
                holding = true
            } else {
                i = chunk.count
            }
            try write(UnsafeRawBufferPointer(rebasing: chunk[passFrom..<i]))
            passFrom = i
        }
    }

    func flush(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        if candidate {
            guard case .write(let bytes) = try decide(atEnd: true) else { throw unreadable() }
            try bytes.withUnsafeBytes { try write($0) }
        } else {
            try line.withUnsafeBytes { try write($0) }
        }
        line.removeAll()
        holding = true
        candidate = false
    }

    private static func mayStart(_ start: [UInt8], _ prefix: [UInt8]) -> Bool {
        start.count <= prefix.count && prefix.starts(with: start)
    }

    private func unreadable() -> KhoError {
        let start = String(decoding: line.prefix(80), as: UTF8.self)
        return KhoError(.integrity, "The dump holds a statement kho cannot read (\(start.debugDescription)…): it is not a mariadb-dump of one database as kho writes it; nothing more of it was loaded.")
    }

    private func otherDatabase(_ name: String) -> KhoError {
        KhoError(.integrity, "The dump names the database \(name.debugDescription), not \((from ?? "").debugDescription), in a line that would act on it: kho loads only statements on the snapshot's own database; nothing more of the dump was loaded.")
    }

    /// The held line (ending with a newline, or the dump's end) rewritten, or nil to read on: a
    /// quoted name may hold a newline.
    private func decide(atEnd: Bool) throws -> Decision {
        guard let form = forms.first(where: { line.starts(with: $0.prefix) }) else { return .write(line) }
        var reader = Reader(bytes: line, at: form.prefix.count)
        switch form {
        case .createDatabase, .use, .alterDatabase:
            if form == .createDatabase { _ = reader.skip("/*!32312 IF NOT EXISTS*/ ") }
            switch reader.identifier() {
            case .incomplete:
                if atEnd { throw unreadable() }
                return .needMore
            case .none: throw unreadable()
            case .name(let name):
                if from == nil {
                    from = name
                    if disableEvents == nil { disableEvents = name != finalName }
                }
                guard name == from else { throw otherDatabase(name) }
                if form == .createDatabase { return .write([]) }
                return .write(form.prefix + Array(SQLIdentifier.mariadb(to).utf8) + line[reader.at...])
            }
        case .event:
            guard disableEvents == true else { return .write(line) }
            return try event(&reader, atEnd: atEnd)
        }
    }

    /// `/*!50106 CREATE*/ /*!50117 DEFINER=`u`@`h`*/ /*!50106 EVENT `e` ON SCHEDULE … ON COMPLETION
    /// [NOT] PRESERVE ENABLE|DISABLE|DISABLE ON SLAVE [COMMENT '…'] DO …`, as the server's SHOW CREATE
    /// EVENT writes it: ENABLE becomes DISABLE.
    private func event(_ reader: inout Reader, atEnd: Bool) throws -> Decision {
        if atEnd {
            // The whole statement is here: what cannot be read now never will be.
            guard let decision = try eventDecision(&reader) else { throw unreadable() }
            return decision
        }
        return try eventDecision(&reader) ?? .needMore
    }

    /// The decision, or nil when the held bytes end before the status.
    private func eventDecision(_ reader: inout Reader) throws -> Decision? {
        let more: Decision? = nil
        if reader.skip("/*!50117 DEFINER=") {
            switch reader.identifier() {
            case .incomplete: return more
            case .none: throw unreadable()
            case .name: break
            }
            if reader.skip("@") {
                switch reader.identifier() {
                case .incomplete: return more
                case .none: throw unreadable()
                case .name: break
                }
            }
            guard reader.skip("*/ ") else { throw unreadable() }
        }
        // Another statement that begins this way is not an event: left as it is.
        guard reader.skip("/*!50106 EVENT ") else { return .write(line) }
        let name: String
        switch reader.identifier() {
        case .incomplete: return more
        case .none: throw unreadable()
        case .name(let value): name = value
        }
        guard reader.skip(" ON SCHEDULE ") else { throw unreadable() }
        // The schedule holds keywords, numbers and quoted times; the first ON COMPLETION outside
        // quotes ends it.
        guard let completion = reader.find(" ON COMPLETION ") else { return more }
        reader.at = completion
        guard reader.skip("NOT PRESERVE ") || reader.skip("PRESERVE ") else { throw unreadable() }
        let status = reader.at
        if reader.skip("ENABLE"), reader.at == line.count || [0x20, 0x0a, 0x2a].contains(line[reader.at]) {
            disabledEvents.append(name)
            return .write(Array(line[..<status]) + Array("DISABLE".utf8) + line[reader.at...])
        }
        guard reader.skip("DISABLE") else { throw unreadable() }
        return .write(line)
    }

    /// Reads the held bytes of a statement.
    private struct Reader {
        enum Identifier { case name(String), incomplete, none }
        let bytes: [UInt8]
        var at: Int

        mutating func skip(_ text: String) -> Bool {
            let expected = Array(text.utf8)
            guard bytes.count - at >= expected.count, Array(bytes[at..<at + expected.count]) == expected else { return false }
            at += expected.count
            return true
        }

        /// A backquoted identifier (a doubled backquote stands for one).
        mutating func identifier() -> Identifier {
            guard at < bytes.count else { return .incomplete }
            guard bytes[at] == 0x60 else { return .none }
            var name: [UInt8] = []
            var i = at + 1
            while i < bytes.count {
                if bytes[i] == 0x60 {
                    if i + 1 < bytes.count && bytes[i + 1] == 0x60 {
                        name.append(0x60)
                        i += 2
                        continue
                    }
                    if i + 1 == bytes.count { return .incomplete }
                    at = i + 1
                    return .name(String(decoding: name, as: UTF8.self))
                }
                name.append(bytes[i])
                i += 1
            }
            return .incomplete
        }

        /// The position after the first `text` outside single-quoted strings and backquoted names.
        func find(_ text: String) -> Int? {
            let needle = Array(text.utf8)
            var i = at
            var quote: UInt8?
            while i < bytes.count {
                let byte = bytes[i]
                if let open = quote {
                    if byte == 0x5c && open == 0x27 { i += 2; continue }
                    if byte == open { quote = nil }
                    i += 1
                    continue
                }
                if byte == 0x27 || byte == 0x60 { quote = byte; i += 1; continue }
                if bytes.count - i >= needle.count && Array(bytes[i..<i + needle.count]) == needle { return i + needle.count }
                i += 1
            }
            return nil
        }
    }
}
