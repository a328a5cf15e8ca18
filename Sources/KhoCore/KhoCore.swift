// KhoCore: kho's repository engine — the format, its cryptography, backup, restore, check, copy and
// prune. It knows storages only through the `Storage` protocol (KhoStorage implements it) and
// knows nothing of schedules, policies or databases. docs/FORMAT.md is the byte-level
// specification; this is the vocabulary, with the file that defines each word.
//
// Rooms: Format/ (what is stored), Crypto/ (keys, sealing, hashing), Repository/ (opening, the
// storage protocol, locks), Files/ (the local filesystem), Backup/, Restore/, Maintenance/ (check,
// copy, prune, retention).
//
// Glossary
//
// - blob: one piece of stored content, a chunk of a file (`BlobKind.data`) or an encoded tree
//   (`BlobKind.tree`), named by its blob ID and sealed on its own. Format/Pack.swift (BlobKind,
//   PackedBlob), Format/BlobCodec.swift (sealing and compression of one blob).
// - blob ID: HMAC-SHA256 of a blob's plaintext under the master key's MAC key, so that IDs reveal
//   nothing to whoever reads the storage. Format/BlobID.swift; computed by `BlobHasher` in
//   Crypto/Crypto.swift.
// - chunk: a piece of a file cut by content-defined chunking (a gear table from the master key's
//   chunker seed),
//   so that an insertion moves only the chunks around it. Backup/Chunker.swift.
// - pack: a file in `data/` holding many sealed blobs and, at its end, a sealed header listing
//   them; named by the SHA-256 of its bytes. Format/Pack.swift; written by Backup/BlobSaver.swift.
// - index: files in `index/` saying which pack holds each blob (`IndexFile`), read together into
//   one sorted in-memory table (`MasterIndex`). Format/Index.swift.
// - tree: the encoded listing of one folder, a list of nodes, stored as a tree blob.
//   Format/Tree.swift.
// - node: one entry of a tree (file, folder, link, special file) with its metadata, the blob IDs
//   of a file's content or the tree of a folder. Format/Tree.swift.
// - snapshot: a file in `snapshots/` naming the root tree of one backup, with its time, host,
//   paths, source and summary. Format/Snapshot.swift.
// - manifest: what the server said a database dump contained (per table: rows and a checksum),
//   kept in the dump's snapshot so that a drill can prove a restore correct and complete.
//   Format/Manifest.swift.
// - master key: the repository's random secrets (an AES-256-GCM key, the MAC key for blob IDs and
//   derived keys, the chunker's seed), never stored in the clear. Crypto/Keys.swift.
// - key file: a file in `keys/` holding the master key sealed under a key derived from a password
//   by scrypt; any one of them opens the repository. Crypto/Keys.swift (KeyFile); tried by
//   `Repository.open` in Repository/Repository.swift.
// - derived key: a key for one purpose (the audit ledger, drill evidence, the config
//   authenticator) derived from the MAC key, so that none of them reveals the master key.
//   Crypto/DerivedKeys.swift, Crypto/Keys.swift.
// - lock: a file in `locks/` that keeps forget and prune away from everything else (shared or
//   exclusive), refreshed while held; a lock that cannot be refreshed stops its holder.
//   Repository/Lock.swift.
// - anchor: a sealed file in `anchors/` holding the head of an audit ledger that used this
//   repository, so that a ledger cut short or rewritten disagrees with it.
//   Crypto/DerivedKeys.swift (LedgerAnchor).
// - drill evidence file: a sealed file in `drills/` holding what a restore drill of this
//   repository's snapshots found (opaque JSON to the engine), so that the catalog's drill records
//   can be rebuilt from the repository. Repository/DrillEvidenceFiles.swift.
// - nonce census: `kho check`'s count of AES-GCM nonces over every sealed object, which finds a
//   nonce used twice under the repository's key. Crypto/NonceCensus.swift.
// - repository config: the file `config`: format version, repository ID, chunker parameters,
//   pack size, compression, object-lock settings, authenticated by a derived key.
//   Repository/Repository.swift (RepositoryConfig).
// - FileKind: the kinds of files a repository holds (config, key, data, index, snapshot, lock,
//   anchor, drill), each with its folder and its largest allowed size; with a name it makes a `Handle`,
//   what the `Storage` protocol reads and writes. Repository/Storage.swift.
