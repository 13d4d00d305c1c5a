import Foundation

/// A non-owning view of `count` contiguous `Float`s.
///
/// Kernels take and return `FloatBuffer`s rather than arrays so that a
/// training step moves no reference counts and allocates nothing. The view is
/// `Sendable` because kernels split work across threads on disjoint ranges;
/// keeping those ranges disjoint is the caller's responsibility.
public struct FloatBuffer: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let count: Int

    @inlinable public init(base: UnsafeMutablePointer<Float>, count: Int) {
        self.base = base
        self.count = count
    }

    @inlinable public subscript(index: Int) -> Float {
        get { base[index] }
        nonmutating set { base[index] = newValue }
    }

    /// The sub-view `[offset, offset + count)`.
    @inlinable public func slice(_ offset: Int, _ count: Int) -> FloatBuffer {
        precondition(offset >= 0 && count >= 0 && offset + count <= self.count, "slice out of range")
        return FloatBuffer(base: base + offset, count: count)
    }

    @inlinable public func fill(_ value: Float) {
        if value == 0 { base.update(repeating: 0, count: count) } else { base.update(repeating: value, count: count) }
    }

    @inlinable public func copy(from other: FloatBuffer) {
        precondition(other.count == count, "copy between buffers of different sizes")
        base.update(from: other.base, count: count)
    }

    /// The contents as an array (for tests and reporting; allocates).
    public var array: [Float] { Array(UnsafeBufferPointer(start: base, count: count)) }
}

/// Owns a 64-byte aligned block of `Float`s, zero-initialised.
///
/// Blocks of a megabyte or more are anonymous memory maps: the kernel hands out zero pages
/// only when they are first written, so a region nobody writes (the float32 slots of
/// weights an int8 checkpoint keeps quantized) costs no resident memory.
public final class FloatStorage: @unchecked Sendable {
    public let buffer: FloatBuffer
    private let mappedBytes: Int

    static let mapThreshold = 1 << 20

    public init(count: Int) {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        if bytes >= Self.mapThreshold {
            guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED else {
                fatalError("out of memory mapping \(bytes) bytes")
            }
            mappedBytes = bytes
            buffer = FloatBuffer(base: raw.bindMemory(to: Float.self, capacity: max(count, 1)), count: count)
            return
        }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        let typed = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        typed.initialize(repeating: 0, count: max(count, 1))
        mappedBytes = 0
        buffer = FloatBuffer(base: typed, count: count)
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { buffer.base.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit {
        if mappedBytes > 0 { munmap(buffer.base, mappedBytes) } else { free(buffer.base) }
    }
}

/// A non-owning view of contiguous `Int32`s (token and type ids).
public struct IntBuffer: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Int32>
    public let count: Int
    @inlinable public subscript(index: Int) -> Int32 {
        get { base[index] }
        nonmutating set { base[index] = newValue }
    }
}

/// Owns a block of `Int32`s.
public final class IntStorage: @unchecked Sendable {
    public let buffer: IntBuffer
    public init(count: Int) {
        let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
        p.initialize(repeating: 0, count: max(count, 1))
        buffer = IntBuffer(base: p, count: count)
    }
    deinit { buffer.base.deallocate() }
}
