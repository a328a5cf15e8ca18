internal import COpenSSL
import Foundation
import KhoSupport

/// A key derived from a repository's master MAC key for one purpose, with the repository it came
/// from. Evidence kho writes outside the repository (the audit ledger, drill evidence) is keyed
/// with it, so that whoever can edit those files but holds no repository password cannot
/// recompute what kho wrote.
public struct DerivedKey: Sendable {
    /// The `id` of the repository's config.
    public let repositoryID: String
    private let secret: SecretBytes

    init(repositoryID: String, secret: SecretBytes) {
        self.repositoryID = repositoryID
        self.secret = secret
    }

    /// HMAC-SHA256(master MAC key, label): a distinct key per label, none of which reveals the
    /// master key or the others.
    package init(master: MasterKey, repositoryID: String, label: String) throws {
        var derived = try BlobHasher(key: master.mac).id(of: Array(label.utf8)).bytes
        defer { Wipe.bytes(&derived) }
        self.init(repositoryID: repositoryID, secret: SecretBytes(derived))
    }

    /// HMAC-SHA256 of `message` under this key, as lowercase hex.
    public func mac(_ message: [UInt8]) throws -> String {
        try BlobHasher(key: secret).id(of: message).hex
    }

    /// Whether `expected` (hex, as stored) is the MAC of `message`; compared in constant time.
    public func verify(_ message: [UInt8], expected: String) throws -> Bool {
        ConstantTime.equal(try mac(message), expected)
    }

    public static let ledgerLabel = "kho/ledger-key"
    public static let evidenceLabel = "kho/evidence-key"
}

extension ConstantTime {
    /// Equality whose time does not depend on where the strings first differ (only on their
    /// lengths, which are public: MACs are 64 hex digits).
    public static func equal(_ a: String, _ b: String) -> Bool {
        equal(Array(a.utf8), Array(b.utf8))
    }
}

extension Repository {
    /// The key of audit ledger entries written about this repository.
    public var ledgerKey: DerivedKey { get throws { try DerivedKey(master: key, repositoryID: config.id, label: DerivedKey.ledgerLabel) } }
    /// The key of drill evidence of this repository's snapshots.
    public var evidenceKey: DerivedKey { get throws { try DerivedKey(master: key, repositoryID: config.id, label: DerivedKey.evidenceLabel) } }
}

/// The head of an audit ledger as a privileged command left it, kept sealed in the repository the
/// command used (`anchors/`), so that a ledger cut short, replaced or rewritten disagrees with
/// what the repository recorded.
public struct LedgerAnchor: Codable, Sendable, Equatable {
    /// `host:path` of the ledger file.
    public var ledger: String
    public var sequence: Int
    /// The entry's keyed hash.
    public var hash: String
    public var time: Date

    public init(ledger: String, sequence: Int, hash: String, time: Date) {
        self.ledger = ledger
        self.sequence = sequence
        self.hash = hash
        self.time = time
    }
}

extension Repository {
    /// Stores a ledger head. Anchors of the same ledger that it supersedes are removed afterwards
    /// (not in append-only repositories, nor while object lock keeps them): a failure there
    /// leaves an older anchor, which is never taken over a newer one.
    public func saveLedgerAnchor(_ anchor: LedgerAnchor) throws {
        let existing = try ledgerAnchors()
        try saveSealed(Array(try JSON.encoder.encode(anchor)), kind: .anchor, compress: false)
        guard !isAppendOnly else { return }
        let superseded = existing.filter { $0.anchor.ledger == anchor.ledger && $0.anchor.sequence < anchor.sequence }
            .map { Handle(.anchor, $0.name) }
        let locked = try retentionDates(superseded)
        for handle in superseded where locked[handle] == nil {
            try storage.remove(handle)
        }
    }

    /// Every ledger head stored in the repository, by file name. An anchor that does not
    /// authenticate is an error: it cannot be told apart from a removed one.
    public func ledgerAnchors() throws -> [(name: String, anchor: LedgerAnchor)] {
        try storage.list(.anchor).map { file in
            let body = try loadSealed(Handle(.anchor, file.name))
            do {
                return (file.name, try JSON.decoder.decode(LedgerAnchor.self, from: Data(body)))
            } catch {
                throw KhoError(.integrity, "anchors/\(file.name) authenticates but is not a ledger anchor: run `kho check`.")
            }
        }
    }

    /// The newest head of `ledger` this repository recorded.
    public func ledgerAnchor(of ledger: String) throws -> LedgerAnchor? {
        try ledgerAnchors().map(\.anchor).filter { $0.ledger == ledger }.max { $0.sequence < $1.sequence }
    }
}

/// Repositories this process opened, so that the audit ledger can key a privileged command's
/// entry and anchor its head in them after the command is done.
package enum OpenedRepositories {
    private static let opened = Locked<[Repository]>([])

    package static func remember(_ repository: Repository) {
        opened.withLock { list in
            if !list.contains(where: { $0.config.id == repository.config.id }) { list.append(repository) }
        }
    }

    package static var all: [Repository] { opened.current }
}
