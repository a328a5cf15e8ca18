import Foundation

/// A first-in first-out queue of fixed capacity shared by threads: `push` waits while it is full,
/// `pop` waits while it is empty. Closing wakes everyone; pops then drain what is left.
public final class BoundedQueue<Element: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element?]
    private var head = 0
    private var count = 0
    private var closed = false

    public init(capacity: Int) {
        items = Array(repeating: nil, count: max(1, capacity))
    }

    /// False when the queue was closed; the element is then dropped.
    @discardableResult
    public func push(_ element: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while count == items.count && !closed { condition.wait() }
        if closed { return false }
        items[(head + count) % items.count] = element
        count += 1
        condition.broadcast()
        return true
    }

    /// Nil once the queue is closed and empty.
    public func pop() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while count == 0 && !closed { condition.wait() }
        if count == 0 { return nil }
        let element = items[head]
        items[head] = nil
        head = (head + 1) % items.count
        count -= 1
        condition.broadcast()
        return element
    }

    public var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closed
    }

    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// A value behind a lock.
public final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    @discardableResult
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    public var current: Value { withLock { $0 } }
}

/// Runs `body` on a new thread; `join()` waits for it.
public final class Worker: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)

    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let thread = Thread {
            body()
            done.signal()
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }

    public func join() { done.wait(); done.signal() }
}

/// The first error any thread of a pipeline hit; later errors are dropped.
public final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?

    public init() {}

    public func record(_ e: Error) {
        lock.lock()
        if error == nil { error = e }
        lock.unlock()
    }

    public var value: Error? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }

    public func check() throws {
        if let error = value { throw error }
    }
}

public enum Machine {
    /// Cores this process may use.
    public static var cores: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }
}

@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32

public enum MemoryTuning {
    /// Large buffers (packs, chunks) come and go with every pack: keep them out of the heap arenas
    /// so that freeing them returns memory, and keep arenas few so that worker threads do not each
    /// pin their own. Values are glibc's M_MMAP_THRESHOLD (-3) and M_ARENA_MAX (-8) from malloc.h,
    /// which the Glibc module does not export.
    public static func apply() {
        _ = glibcMallopt(-3, 1 << 20)
        _ = glibcMallopt(-8, 2)
    }
}

public enum DescriptorLimit {
    /// Raises the soft limit on open files to the hard limit: a restore keeps every file of the
    /// runs in flight open until its blobs are written, and a default soft limit of 1024 is near.
    public static func raise() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// The soft limit on open files now in force.
    public static var current: Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return limit.rlim_cur > rlim_t(Int32.max) ? Int(Int32.max) : Int(limit.rlim_cur)
    }
}
