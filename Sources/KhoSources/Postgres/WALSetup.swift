import Foundation
import Glibc
import KhoCore
import KhoSupport

/// `kho wal setup`: checks a PostgreSQL data directory, the repository and (for `--direct`) the
/// environment file archive_command reads, before anything is archived, and says which
/// postgresql.conf lines to write. It changes nothing: the DBA writes the lines and reloads.
public struct WALSetup: Sendable {
    public var source: String
    public var dataDirectory: String
    /// The kho binary archive_command runs (absolute).
    public var kho: String
    /// For `--direct`: the root-owned file with KHO_REPOSITORY and KHO_PASSWORD_FILE that
    /// archive_command reads; nil for the agent.
    public var environmentFile: String?
    public var archiveTimeout: Int

    public init(source: String, dataDirectory: String, kho: String, environmentFile: String?, archiveTimeout: Int) {
        self.source = source
        self.dataDirectory = dataDirectory
        self.kho = kho
        self.environmentFile = environmentFile
        self.archiveTimeout = archiveTimeout
    }

    public struct Report: Sendable {
        public var cluster: SystemIdentifier
        public var serverVersion: Int
        /// The data directory's owner: the user archive_command runs as.
        public var user: String
        public var segmentSize: Int?
        /// The postgresql.conf lines, in order.
        public var settings: [String]
        public var warnings: [String]
        /// What the checks found in order, one line each.
        public var notes: [String]
    }

    /// Runs the checks; `repository` is nil when none was given (the archive is then not looked at).
    public func check(repository: Repository?) throws -> Report {
        var warnings: [String] = []
        var notes: [String] = []
        var info = stat()
        _ = try Syscall.call("stat", dataDirectory) { stat(dataDirectory, &info) }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw KhoError(.usage, "\(dataDirectory) is not a folder: pass the cluster's data directory (SHOW data_directory) with --data-directory.")
        }
        let owner = Account(uid: info.st_uid)
        let identity = try WALClusterIdentity.read(dataDirectory: dataDirectory)
        notes.append("cluster \(identity.cluster), PostgreSQL \(identity.serverVersion), data directory owned by \(owner.name)")
        let segmentSize = try newestSegmentSize(cluster: identity.cluster)
        if let segmentSize {
            guard segmentSize <= WALObject.largestSegmentSize else {
                throw KhoError(.usage, "Cluster \(identity.cluster) writes \(segmentSize >> 20) MiB WAL segments, more than the \(WALObject.largestSegmentSize >> 20) MiB kho archives: kho cannot archive this cluster; use wal_segment_size of at most 64 MiB (initdb --wal-segsize).")
            }
            notes.append("WAL segments of \(segmentSize >> 20) MiB")
        } else {
            warnings.append("no WAL segment of cluster \(identity.cluster) was found in \(dataDirectory)/pg_wal, so its segment size is unchecked: kho archives segments of at most 64 MiB.")
        }
        if let repository {
            let inventory = try WALArchive.inventory(in: repository)
            if let mine = inventory.records.first(where: { $0.cluster == identity.cluster.description }) {
                guard mine.source == source else {
                    throw KhoError(.usage, "Cluster \(identity.cluster) is already archived for source \(mine.source) in this repository: pass --source \(mine.source), or archive this cluster into another repository.")
                }
                if inventory.isRetired(mine) {
                    throw KhoError(.usage, "Cluster \(identity.cluster)'s archive for source \(source) was retired by `kho wal adopt`: kho refuses its WAL; archive a new cluster instead.")
                }
                notes.append("the repository already archives this cluster for source \(source)")
            } else if let current = inventory.current(source: source) {
                warnings.append("source \(source) archives cluster \(current.cluster) in this repository, so this cluster's WAL will be refused: after pg_upgrade or a rebuilt cluster, run `kho wal adopt --source \(source) --cluster \(current.cluster)` first.")
            } else {
                notes.append("source \(source) has no archive yet: the cluster's first segment creates it")
            }
        } else {
            warnings.append("no repository given (--repo or KHO_REPOSITORY): the archive itself was not checked.")
        }
        let command: String
        if let environmentFile {
            try checkEnvironmentFile(environmentFile, owner: owner, warnings: &warnings, notes: &notes)
            command = "set -a && . \(Self.argument(environmentFile)) && exec \(Self.argument(kho)) wal push --direct --source \(Self.argument(source)) %p"
            warnings.append("--direct puts the repository password within reach of every superuser of this cluster (COPY … TO PROGRAM runs as \(owner.name)): use a repository of its own for this cluster's WAL, never the one that holds other backups.")
        } else {
            command = "exec \(Self.argument(kho)) wal push --source \(Self.argument(source)) %p"
            warnings.append("without --direct, kho wal push hands each file to the WAL agent (kho wal serve), which must run on this host.")
        }
        let settings = [
            "archive_mode = on",
            "archive_command = \(Self.confQuote(command))",
            "archive_timeout = \(archiveTimeout)",
        ]
        return Report(cluster: identity.cluster, serverVersion: identity.serverVersion, user: owner.name, segmentSize: segmentSize,
                      settings: settings, warnings: warnings, notes: notes)
    }

    /// One word of archive_command: shell-quoted, and `%` doubled, as PostgreSQL replaces `%p`,
    /// `%f` and `%%` in the command before the shell sees it.
    static func argument(_ text: String) -> String {
        Shell.quote(text).replacingOccurrences(of: "%", with: "%%")
    }

    /// A postgresql.conf string value: single quotes, a quote doubled.
    static func confQuote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// The segment size from the header of the newest segment in pg_wal that is this cluster's.
    private func newestSegmentSize(cluster: SystemIdentifier) throws -> Int? {
        let folder = dataDirectory + "/pg_wal"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return nil }
        for leaf in names.sorted(by: >) {
            guard let name = try? WALFileName(parsing: leaf), name.kind == .segment else { continue }
            let head: [UInt8]
            do {
                let fd = try Syscall.call("open", folder + "/" + leaf) { open(folder + "/" + leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
                defer { close(fd) }
                var buffer = [UInt8](repeating: 0, count: WALSegmentHeader.size)
                let n = try buffer.withUnsafeMutableBytes { try Syscall.preadFull(fd, $0, offset: 0, folder + "/" + leaf) }
                head = Array(buffer.prefix(n))
            } catch {
                continue
            }
            guard let header = try? WALSegmentHeader(parsing: head, file: leaf), header.systemIdentifier == cluster else { continue }
            return Int(header.segmentSize)
        }
        return nil
    }

    /// The environment file must be root's and written by nobody else (archive_command sources
    /// it), readable by the cluster's user, and name the repository and the password file, which
    /// the cluster's user must be able to read too.
    private func checkEnvironmentFile(_ path: String, owner: Account, warnings: inout [String], notes: inout [String]) throws {
        var info = stat()
        guard path.hasPrefix("/") else {
            throw KhoError(.usage, "--env-file \(path) is not an absolute path: archive_command runs in the data directory; give the file's full path.")
        }
        _ = try Syscall.call("stat", path) { lstat(path, &info) }
        guard info.st_mode & S_IFMT == S_IFREG, info.st_uid == 0, info.st_mode & 0o022 == 0 else {
            throw KhoError(.usage, "\(path) must be a regular file owned by root and writable by nobody else (archive_command runs it as shell text): chown root \(path) && chmod 0640 \(path).")
        }
        guard owner.canRead(info) else {
            throw KhoError(.usage, "\(owner.name) cannot read \(path), so archive_command cannot: chgrp \(owner.groupName) \(path) && chmod 0640 \(path).")
        }
        let text = String(decoding: try Syscall.readFile(path, limit: 64 << 10), as: UTF8.self)
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
            var value = String(trimmed[trimmed.index(after: equals)...])
            if value.count >= 2, let first = value.first, first == "'" || first == "\"", value.last == first { value = String(value.dropFirst().dropLast()) }
            values[String(trimmed[..<equals]).replacingOccurrences(of: "export ", with: "")] = value
        }
        guard values["KHO_REPOSITORY"]?.isEmpty == false else {
            throw KhoError(.usage, "\(path) does not set KHO_REPOSITORY: add KHO_REPOSITORY=<the WAL repository> to it.")
        }
        if values["KHO_PASSWORD"] != nil || values["KHO_PASSWORD_COMMAND"] != nil {
            warnings.append("\(path) sets KHO_PASSWORD or KHO_PASSWORD_COMMAND: prefer KHO_PASSWORD_FILE, a file of its own that only root and \(owner.name) can read.")
        }
        if let passwordFile = values["KHO_PASSWORD_FILE"], !passwordFile.isEmpty {
            var passwordInfo = stat()
            _ = try Syscall.call("stat", passwordFile) { stat(passwordFile, &passwordInfo) }
            guard owner.canRead(passwordInfo) else {
                throw KhoError(.usage, "\(owner.name) cannot read the password file \(passwordFile), so archive_command cannot open the repository: chgrp \(owner.groupName) \(passwordFile) && chmod 0640 \(passwordFile).")
            }
            if passwordInfo.st_mode & 0o004 != 0 {
                throw KhoError(.usage, "The password file \(passwordFile) is readable by every user: chmod o-r \(passwordFile).")
            }
        } else if values["KHO_PASSWORD"] == nil && values["KHO_PASSWORD_COMMAND"] == nil {
            throw KhoError(.usage, "\(path) does not set KHO_PASSWORD_FILE: add KHO_PASSWORD_FILE=<a file holding the WAL repository's password> to it.")
        }
        notes.append("\(path) is root's, readable by \(owner.name), and names the repository and its password")
    }
}

/// A local user, to say whether it can read a file by its mode bits.
struct Account {
    var uid: uid_t
    var gid: gid_t
    var name: String
    var groupName: String
    var groups: [gid_t]

    init(uid: uid_t) {
        self.uid = uid
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        if getpwuid_r(uid, &entry, &buffer, buffer.count, &found) == 0, found != nil {
            name = String(cString: entry.pw_name)
            gid = entry.pw_gid
            var count: Int32 = 64
            var list = [gid_t](repeating: 0, count: 64)
            if getgrouplist(entry.pw_name, gid, &list, &count) >= 0 { groups = Array(list.prefix(Int(count))) } else { groups = [gid] }
        } else {
            name = "uid \(uid)"
            gid = gid_t.max
            groups = []
        }
        var groupEntry = Glibc.group()
        var foundGroup: UnsafeMutablePointer<Glibc.group>?
        if getgrgid_r(gid, &groupEntry, &buffer, buffer.count, &foundGroup) == 0, foundGroup != nil {
            groupName = String(cString: groupEntry.gr_name)
        } else {
            groupName = "\(gid)"
        }
    }

    func canRead(_ info: stat) -> Bool {
        if uid == 0 { return true }
        if info.st_uid == uid { return info.st_mode & 0o400 != 0 }
        if groups.contains(info.st_gid) { return info.st_mode & 0o040 != 0 }
        return info.st_mode & 0o004 != 0
    }
}

/// Shell text for a value: as is when it holds only characters the shell leaves alone, else in
/// single quotes with each quote written as '\''.
enum Shell {
    static func quote(_ text: String) -> String {
        let plain = !text.isEmpty && text.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte) || "_-./=:@,+".utf8.contains(byte)
        }
        return plain ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
