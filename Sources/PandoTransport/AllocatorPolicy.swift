#if canImport(Glibc)
import CMalloc
#endif
import NIOCore
import PandoWire

/// Keeps the process's resident memory proportional to the buffers it actually holds.
///
/// glibc raises its mmap threshold each time a large block is freed, after which chunk-sized
/// buffers (a few hundred KB, allocated and freed on different threads for every transfer)
/// come from per-thread heaps that are rarely given back: a 300 MB upload could leave tens of
/// MB resident that no one uses. Fixing the threshold at 128 KiB makes every chunk buffer its
/// own mapping, returned to the kernel when freed. Called once by `CoordinatorServer` and
/// `SchoolClient`; a no-op on other C libraries.
enum AllocatorPolicy {
    private static let applied: Bool = {
        #if canImport(Glibc)
        return mallopt(M_MMAP_THRESHOLD, 128 << 10) == 1
        #else
        return false
        #endif
    }()

    @discardableResult
    static func apply() -> Bool { applied }
}

extension WireLimits {
    /// At most four decoded messages (four chunks) wait for the session task before the
    /// connection stops reading from the socket; TCP flow control then slows the sender.
    static var asyncChannelConfiguration: NIOAsyncChannel<WireMessage, WireMessage>.Configuration {
        .init(backPressureStrategy: .init(lowWatermark: 1, highWatermark: 4))
    }
}
