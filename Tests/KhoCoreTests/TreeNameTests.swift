import Foundation
import Glibc
import Testing
@testable import KhoCore
import KhoSupport

// The library-level half of the restore-confinement tests: names that are paths never get into a
// tree kho writes, and a tree holding one is refused by every reader (see RestoreConfinementTests
// for the same attacks through the `kho` binary).

private func memoryRepository() throws -> Repository {
    var options = Repository.CreateOptions()
    options.scrypt = Scrypt.minimum  // the cheapest a key file may ask for in this build
    return try Repository.create(storage: MemoryStorage(), password: Array("test password".utf8), options: options)
}

@Suite("tree names")
struct TreeNameTests {
    static let pathNames: [[UInt8]] = [[], Array(".".utf8), Array("..".utf8), Array("../x".utf8), Array("a/b".utf8),
                                       Array("/".utf8), Array("a".utf8) + [0] + Array("b".utf8)]

    @Test("only plain names pass Node.isPlainName")
    func plainNames() {
        for name in TreeNameTests.pathNames { #expect(!Node.isPlainName(name), "\(name)") }
        for name in ["a", "...", ".hidden", "..x", "x..", "tên tệp", "a\\b"] { #expect(Node.isPlainName(name), "\(name)") }
        #expect(Node.isPlainName([0xff, 0xfe]), "names need not be UTF-8")
    }

    @Test("a tree whose entry is named as a path does not decode: integrity error")
    func decodingRefusesPathNames() throws {
        for name in TreeNameTests.pathNames {
            let bytes = Tree(nodes: [Node(name: name, kind: .file)]).encoded()
            let id = try #require(BlobID(bytes: Array(repeating: UInt8(7), count: 32)))
            #expect(throws: KhoError.self) { try Tree(decoding: bytes, id: id) }
            do {
                _ = try Tree(decoding: bytes, id: id)
            } catch let error as KhoError {
                #expect(error.kind == .integrity && error.message.contains("not a plain file name"), "\(error.message)")
            }
        }
    }

    @Test("a stream named as a path is refused before it is read; nothing is committed")
    func streamNamesRefused() throws {
        let repository = try memoryRepository()
        for name in ["..", ".", "", "../x", "a/b"] {
            var read = false
            let archiver = try Archiver(repository: repository, index: try repository.loadIndex(), options: BackupOptions()) { _ in }
            #expect(throws: KhoError.self) {
                _ = try archiver.backupStream(name: name, read: { _ in read = true; return 0 }, finish: {})
            }
            #expect(!read, "the stream \(name.debugDescription) was read")
        }
        #expect(try repository.listSnapshots().isEmpty)
    }
}
