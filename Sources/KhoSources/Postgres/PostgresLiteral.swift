import Foundation

/// String literals for the DDL kho writes itself, where the server takes no parameters (CREATE
/// DATABASE … LC_COLLATE, COMMENT ON, ALTER … SET, VALID UNTIL). The result means the same text
/// whatever `standard_conforming_strings` is, as `PQescapeLiteral` does: quotes are doubled, and a
/// string with a backslash is written as E'…' with the backslashes doubled.
enum PostgresLiteral {
    static func quote(_ text: String) -> String {
        let quoted = text.replacingOccurrences(of: "'", with: "''")
        guard text.contains("\\") else { return "'" + quoted + "'" }
        return "E'" + quoted.replacingOccurrences(of: "\\", with: "\\\\") + "'"
    }

    /// Settings whose value is a list of names the server quotes element by element (`GUC_LIST_QUOTE`
    /// in the server): `search_path = '"$user", public'` is stored as that text, and must be given
    /// back as `'$user', 'public'`, or it becomes one name with quotes in it.
    static let listSettings: Set<String> = [
        "search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries", "shared_preload_libraries",
    ]

    /// The value part of `ALTER … SET name TO value` for a stored `name=value` (pg_db_role_setting),
    /// as pg_dump writes it; nil when the entry has no `=`.
    static func setting(_ entry: String) -> (name: String, value: String)? {
        guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else { return nil }
        let name = String(entry[..<equals])
        let raw = String(entry[entry.index(after: equals)...])
        if listSettings.contains(name.lowercased()) {
            let elements = splitList(raw)
            return (name, elements.isEmpty ? "''" : elements.map(quote).joined(separator: ", "))
        }
        return (name, quote(raw))
    }

    /// The server's SplitGUCList: comma-separated, blanks around elements dropped, an element in
    /// double quotes keeps its text with "" as one quote (and is not case-folded).
    static func splitList(_ text: String) -> [String] {
        var result: [String] = []
        guard !text.allSatisfy({ $0.isWhitespace }) else { return [] }
        var chars = Array(text)
        chars.append(",")
        var i = 0
        while i < chars.count {
            while i < chars.count, chars[i] == " " || chars[i] == "\t" || chars[i] == "\n" || chars[i] == "\r" { i += 1 }
            var element = ""
            if chars[i] == "\"" {
                i += 1
                while i < chars.count {
                    if chars[i] == "\"" {
                        if i + 1 < chars.count, chars[i + 1] == "\"" { element.append("\""); i += 2; continue }
                        i += 1
                        break
                    }
                    element.append(chars[i])
                    i += 1
                }
                while i < chars.count, chars[i] != "," { i += 1 }
            } else {
                while i < chars.count, chars[i] != "," { element.append(chars[i]); i += 1 }
                while let last = element.last, last == " " || last == "\t" || last == "\n" || last == "\r" { element.removeLast() }
            }
            result.append(element)
            i += 1  // the comma
        }
        return result
    }
}
