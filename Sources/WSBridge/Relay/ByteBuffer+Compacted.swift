import NIOCore

extension ByteBuffer {
    /// The bytes in storage of about their size when most of this buffer's storage is unused. What is held for a
    /// while (early bytes kept across the upgrade, an inflated piece or a compressed frame on a channel's outbound
    /// buffer, whose limits count readable bytes) would otherwise keep all of the storage it came in: a few bytes
    /// of a 64 KiB buffer would hold 64 KiB each. A copy of at most half the storage.
    func compacted(allocator: ByteBufferAllocator) -> ByteBuffer {
        guard self.capacity > 2 * self.readableBytes else { return self }
        var copy = allocator.buffer(capacity: self.readableBytes)
        var source = self
        copy.writeBuffer(&source)
        return copy
    }
}
