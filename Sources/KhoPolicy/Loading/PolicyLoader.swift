import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import Yams

/// Reads and checks policy files. Every problem found is reported, not only the first.
public struct PolicyLoader {
    public var checkSecrets = true

    public init(checkSecrets: Bool = true) { self.checkSecrets = checkSecrets }

    public func load(directory: String) -> (policies: [Policy], errors: [PolicyError]) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            return ([], [PolicyError(file: directory, line: 0, column: 0, message: "is not a folder of policy files: check --policies")])
        }
        if let problem = PolicyTrust.problem(directory) {
            return ([], [PolicyError(file: directory, line: 0, column: 0, message: problem)])
        }
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            return ([], [PolicyError(file: directory, line: 0, column: 0, message: "the policy folder cannot be listed (\(error.localizedDescription)): check that it exists and is readable")])
        }
        let files = entries.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        var policies: [Policy] = []
        var errors: [PolicyError] = []
        var names: [String: String] = [:]
        var sourceNames: [String: String] = [:]
        for file in files {
            let path = directory + "/" + file
            let (policy, fileErrors) = load(file: path)
            errors += fileErrors
            guard let policy else { continue }
            if let other = names[policy.name] {
                errors.append(PolicyError(file: path, line: policy.nameLocation.line, column: policy.nameLocation.column, message: "policy name \"\(policy.name)\" is already used by \(other): names must be unique"))
                continue
            }
            names[policy.name] = path
            var duplicate = false
            for source in policy.sources {
                // A source's base backups (a weekly policy) and its dumps (a nightly one) may share
                // its name: retention and the size guard keep the two families apart (FORMAT 21.5).
                let key = policy.repository.path + "\u{0}" + source.name + "\u{0}" + source.kind.retentionFamily.rawValue
                if let other = sourceNames[key] {
                    errors.append(PolicyError(file: path, line: source.nameLocation.line, column: source.nameLocation.column, message: "source name \"\(source.name)\" is already used in the same repository by \(other): names must be unique per repository"))
                    duplicate = true
                }
                sourceNames[key] = path
            }
            if !duplicate { policies.append(policy) }
        }
        return (policies, errors)
    }

    public func load(file path: String) -> (Policy?, [PolicyError]) {
        if let problem = PolicyTrust.problem(path) {
            return (nil, [PolicyError(file: path, line: 0, column: 0, message: problem)])
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            return (nil, [PolicyError(file: path, line: 0, column: 0, message: "cannot be read as UTF-8 text")])
        }
        let (expanded, expansionErrors) = PolicyLoader.expandVariables(text, file: path)
        if !expansionErrors.isEmpty { return (nil, expansionErrors) }
        let node: Yams.Node
        do {
            guard let composed = try Yams.compose(yaml: expanded) else {
                return (nil, [PolicyError(file: path, line: 1, column: 1, message: "is empty: a policy needs at least name, schedule, repository and sources")])
            }
            node = composed
        } catch let error as YamlError {
            return (nil, [PolicyReader.yamlError(error, file: path)])
        } catch {
            return (nil, [PolicyError(file: path, line: 1, column: 1, message: "is not valid YAML: \(error)")])
        }
        var reader = PolicyReader(file: path, checkSecrets: checkSecrets)
        let policy = reader.policy(node, defaultName: ((path as NSString).lastPathComponent as NSString).deletingPathExtension)
        return (reader.errors.isEmpty ? policy : nil, reader.errors)
    }
}

/// A policy names commands kho runs as root: whoever can change a policy file, or a folder on its
/// way, runs commands as root. A policy is read only when it and every folder above it can be
/// changed by nobody but root and the user running kho.
public enum PolicyTrust {
    /// Why `path` cannot be trusted, or nil (see `FileSystem.trustProblem`).
    public static func problem(_ path: String) -> String? {
        FileSystem.trustProblem(path, includingItself: true)
            .map { "is not read: \($0), who could make kho run any command as \(geteuid() == 0 ? "root" : "user \(geteuid())")" }
    }
}

extension PolicyLoader {
    /// Replaces `${NAME}` and `${NAME:-default}` with the environment's values, so that one policy
    /// file serves hosts whose ports and paths differ. An unset variable without a default is an error.
    static func expandVariables(_ text: String, file: String) -> (String, [PolicyError]) {
        var errors: [PolicyError] = []
        var lines: [String] = []
        let environment = ProcessInfo.processInfo.environment
        for (number, whole) in text.components(separatedBy: "\n").enumerated() {
            // A comment is not a value: references in it are left as written.
            let commentStart = PolicyLoader.commentStart(whole)
            let line = whole[..<commentStart]
            var output = ""
            var rest = line
            while let start = rest.range(of: "${") {
                output += rest[..<start.lowerBound]
                // Columns count in the line as written, not as expanded so far.
                let column = line.distance(from: line.startIndex, to: start.lowerBound) + 1
                guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                    errors.append(PolicyError(file: file, line: number + 1, column: column, message: "unclosed ${ in a variable reference"))
                    output += rest[start.lowerBound...]
                    rest = ""
                    break
                }
                let body = rest[start.upperBound..<end]
                let parts = body.components(separatedBy: ":-")
                let name = parts[0]
                if let value = environment[name], !value.isEmpty {
                    // Masked wherever kho shows a command or an error (see Secrets).
                    Secrets.registerExpanded(value, name: name)
                    output += value
                } else if parts.count > 1 {
                    output += parts.dropFirst().joined(separator: ":-")
                } else {
                    errors.append(PolicyError(file: file, line: number + 1, column: column,
                                              message: "environment variable \(name) is not set and has no default: set it or write ${\(name):-default}"))
                }
                rest = rest[rest.index(after: end)...]
            }
            output += rest
            output += whole[commentStart...]
            lines.append(output)
        }
        return (lines.joined(separator: "\n"), errors)
    }

    /// Where a YAML comment starts on `line` (its end when there is none): a `#` at the start or
    /// after a space or tab, outside quotes.
    static func commentStart(_ line: String) -> String.Index {
        var quote: Character?
        var previous: Character?
        var index = line.startIndex
        while index < line.endIndex {
            let c = line[index]
            if let open = quote {
                let next = line.index(after: index)
                if open == "\"" && c == "\\" && next < line.endIndex {
                    index = line.index(after: next)  // an escaped character
                    continue
                }
                if open == "'" && c == "'" && next < line.endIndex && line[next] == "'" {
                    index = line.index(after: next)  // '' is a quote inside single quotes
                    continue
                }
                if c == open { quote = nil }
            } else if c == "\"" || c == "'" {
                if previous == nil || previous == " " || previous == "\t" || "[{,:-".contains(previous!) { quote = c }
            } else if c == "#" && (previous == nil || previous == " " || previous == "\t") {
                return index
            }
            previous = c
            index = line.index(after: index)
        }
        return line.endIndex
    }
}
