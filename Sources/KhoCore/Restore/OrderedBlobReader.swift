import Foundation
import KhoSupport
import Glibc

/// Reads a file's blobs in order, decoding several at once, and hands the plaintext to a consumer
/// on the calling thread: used to dump a stream to stdout or into a database client.
public final class OrderedBlobReader {
    private let repository: Repository
    private let locations: [BlobLocation]
    private let workers: Int

    public init(repository: Repository, index: MasterIndex, content: [BlobID], workers: Int = Machine.cores) throws {
        self.repository = repository
        self.workers = max(1, workers)
        locations = try content.map { id in
            guard let location = index.lookup(id) else {
                throw KhoError(.integrity, "Data blob \(id.shortHex) is not in the index: the repository is missing data; run `kho check`.")
            }
            return location
        }
    }

    public func run(_ consume: ([UInt8]) throws -> Void) throws {
        let window = workers * 4
        let results = Locked<[Int: Result<[UInt8], Error>]>([:])
        let ready = NSCondition()
        let next = Locked(0)
        let consumed = Locked(0)
        let stop = Locked(false)
        let repository = self.repository
        let locations = self.locations
        var threads: [Worker] = []
        for n in 0..<workers {
            threads.append(Worker(name: "kho-read-\(n)") {
                let codec = Result { try BlobCodec(repository: repository) }
                while true {
                    // Stay within the window so memory stays bounded.
                    ready.lock()
                    while !stop.current && next.current < locations.count && next.current - consumed.current >= window { ready.wait() }
                    ready.unlock()
                    if stop.current { return }
                    let i = next.withLock { n -> Int in let i = n; n += 1; return i }
                    if i >= locations.count { return }
                    let result = Result { try codec.get().loadBytes(locations[i], from: repository) }
                    results.withLock { $0[i] = result }
                    ready.lock(); ready.broadcast(); ready.unlock()
                }
            })
        }
        defer {
            stop.withLock { $0 = true }
            ready.lock(); ready.broadcast(); ready.unlock()
            threads.forEach { $0.join() }
        }
        for i in 0..<locations.count {
            ready.lock()
            while results.withLock({ $0[i] == nil }) { ready.wait() }
            ready.unlock()
            let result = results.withLock { $0.removeValue(forKey: i)! }
            consumed.withLock { $0 = i + 1 }
            ready.lock(); ready.broadcast(); ready.unlock()
            try consume(try result.get())
        }
    }
}
