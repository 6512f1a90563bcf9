# cython: language_level=3
"""Split virtqueues (virtio 1.x, section 2.7) read and written in guest memory, with indirect descriptors and
VIRTIO_F_EVENT_IDX.

Every address comes from the guest, so every access is bounds-checked by ``GuestMemory.ptr``. A malformed ring or
chain raises ``VirtqueueError`` (the transport then puts the device in its error state):
index out of range, a chain longer than the queue (a loop), a zero-length buffer, a buffer outside guest RAM,
a nested or badly sized indirect table, INDIRECT together with NEXT, a device-readable buffer after a writable one,
or an avail index that moved by more than the queue size.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from _vmcore.memory cimport GuestMemory

from _vmcore.errors import VirtqueueError

cdef extern from *:
    """
    static inline void vq_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void vq_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline void vq_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    void vq_fence_acquire() nogil
    void vq_fence_release() nogil
    void vq_fence_full() nogil

cdef enum:
    F_NEXT = 1
    F_WRITE = 2
    F_INDIRECT = 4
    AVAIL_F_NO_INTERRUPT = 1
    MAX_INDIRECT = 1024

VIRTQ_DESC_F_NEXT = F_NEXT
VIRTQ_DESC_F_WRITE = F_WRITE
VIRTQ_DESC_F_INDIRECT = F_INDIRECT


cdef inline uint16_t _u16(GuestMemory mem, uint64_t gpa) except? 0xFFFF:
    cdef uint16_t v
    memcpy(&v, mem.ptr(gpa, 2), 2)
    return v


cdef class DescriptorChain:
    """One request: ``segments`` is a list of ``(guest_addr, length, writable)``, readable ones first."""

    def __init__(self, GuestMemory mem, uint16_t head, list segments):
        self.mem = mem
        self.head = head
        self.segments = segments
        self.readable_len = 0
        self.writable_len = 0
        for _, length, writable in segments:
            if writable:
                self.writable_len += length
            else:
                self.readable_len += length

    cpdef bytes read_readable(self, uint64_t skip=0, uint64_t limit=0xFFFFFFFFFFFFFFFF):
        """The device-readable bytes, after skipping ``skip`` of them, at most ``limit``."""
        out = bytearray()
        cdef uint64_t addr, length, take
        for seg in self.segments:
            addr, length = seg[0], seg[1]
            if seg[2] or limit == 0:
                break
            if skip >= length:
                skip -= length
                continue
            take = min(length - skip, limit)
            out += (<char *>self.mem.ptr(addr + skip, take))[:take]
            limit -= take
            skip = 0
        return bytes(out)

    cpdef uint64_t write_writable(self, uint64_t offset, const unsigned char[::1] data):
        """Scatter ``data`` into the device-writable buffers from byte ``offset``; returns bytes written."""
        cdef uint64_t done = 0, total = data.shape[0], addr, length, take
        for seg in self.segments:
            if done >= total:
                break
            addr, length = seg[0], seg[1]
            if not seg[2]:
                continue
            if offset >= length:
                offset -= length
                continue
            take = min(length - offset, total - done)
            memcpy(self.mem.ptr(addr + offset, take), &data[done], take)
            done += take
            offset = 0
        return done


cdef class Virtqueue:
    """A split virtqueue of at most ``max_size`` entries; the driver sets size and ring addresses."""

    def __init__(self, uint16_t max_size=256):
        if max_size == 0 or max_size & (max_size - 1):
            raise ValueError("queue size must be a power of two")
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.ready = False
        self.desc_addr = self.avail_addr = self.used_addr = 0
        self.event_idx = False
        self.next_avail = self.next_used = 0
        self.signalled_used = 0
        self.signalled_valid = False
        self.mem = None

    def state(self) -> dict:
        """Plain values, enough to restore the queue after a snapshot."""
        return {"max_size": self.max_size, "size": self.size, "ready": self.ready, "desc": self.desc_addr,
                "avail": self.avail_addr, "used": self.used_addr, "event_idx": self.event_idx,
                "next_avail": self.next_avail, "next_used": self.next_used,
                "signalled_used": self.signalled_used if self.signalled_valid else None}

    def set_state(self, dict st) -> None:
        self.size, self.ready, self.event_idx = st["size"], st["ready"], st["event_idx"]
        self.desc_addr, self.avail_addr, self.used_addr = st["desc"], st["avail"], st["used"]
        self.next_avail, self.next_used = st["next_avail"], st["next_used"]
        self.signalled_valid = st["signalled_used"] is not None
        self.signalled_used = st["signalled_used"] or 0

    cpdef void attach(self, GuestMemory mem) except *:
        """Validate size, alignment and that the three ring areas lie in ``mem``; then use ``mem``."""
        cdef uint64_t n = self.size
        if n == 0 or n > self.max_size or n & (n - 1):
            raise VirtqueueError(f"queue size {n} is not a power of two up to {self.max_size}")
        if self.desc_addr & 15 or self.avail_addr & 1 or self.used_addr & 3:
            raise VirtqueueError("misaligned ring address")
        for name, addr, length in (("descriptor table", self.desc_addr, 16 * n),
                                   ("available ring", self.avail_addr, 6 + 2 * n),
                                   ("used ring", self.used_addr, 6 + 8 * n)):
            if not mem.contains(addr, length):
                raise VirtqueueError(f"{name} at {addr:#x}+{length:#x} is outside guest RAM")
        self.mem = mem

    def pending(self) -> int:
        """How many chains the driver has made available that we have not taken yet."""
        if self.mem is None:
            return 0
        return <uint16_t>(_u16(self.mem, self.avail_addr + 2) - self.next_avail)

    cpdef DescriptorChain pop(self):
        """The next available chain, or None when the driver has given nothing new."""
        if self.mem is None:
            raise VirtqueueError("queue used before it was made ready")
        cdef uint16_t avail_idx = _u16(self.mem, self.avail_addr + 2)
        cdef uint16_t pending = avail_idx - self.next_avail
        cdef uint16_t head, ev
        if pending == 0:
            return None
        if pending > self.size:
            raise VirtqueueError(f"available index moved by {pending}, more than the queue size {self.size}")
        vq_fence_acquire()
        head = _u16(self.mem, self.avail_addr + 4 + 2 * (self.next_avail % self.size))
        self.next_avail += 1
        if self.event_idx:  # avail_event: tell the driver how far we have read, to be notified past it
            ev = self.next_avail
            memcpy(self.mem.ptr(self.used_addr + 4 + 8 * <uint64_t>self.size, 2), &ev, 2)
        return self._walk(head)

    cdef DescriptorChain _walk(self, uint16_t head):
        cdef uint64_t table = self.desc_addr, addr
        cdef uint32_t table_size = self.size, count = 0, length
        cdef uint16_t flags, nxt
        cdef uint32_t idx = head
        cdef bint indirect = False, seen_writable = False
        cdef uint8_t *d
        segments = []
        while True:
            if idx >= table_size:
                raise VirtqueueError(f"descriptor index {idx} out of range ({table_size})")
            count += 1
            if count > table_size:
                raise VirtqueueError(f"descriptor chain from head {head} is longer than its table: a loop")
            d = self.mem.ptr(table + 16 * <uint64_t>idx, 16)
            memcpy(&addr, d, 8)
            memcpy(&length, d + 8, 4)
            memcpy(&flags, d + 12, 2)
            memcpy(&nxt, d + 14, 2)
            if flags & F_INDIRECT:
                if indirect:
                    raise VirtqueueError("nested indirect descriptor table")
                if flags & F_NEXT:
                    raise VirtqueueError("descriptor has both INDIRECT and NEXT")
                if length == 0 or length % 16 or length // 16 > MAX_INDIRECT:
                    raise VirtqueueError(f"indirect table length {length} is invalid")
                if not self.mem.contains(addr, length):
                    raise VirtqueueError(f"indirect table at {addr:#x}+{length:#x} is outside guest RAM")
                table, table_size, idx, count, indirect = addr, length // 16, 0, 0, True
                continue
            if length == 0:
                raise VirtqueueError(f"zero-length descriptor {idx}")
            if not self.mem.contains(addr, length):
                raise VirtqueueError(f"buffer at {addr:#x}+{length:#x} is outside guest RAM")
            if flags & F_WRITE:
                seen_writable = True
            elif seen_writable:
                raise VirtqueueError("device-readable descriptor after a device-writable one")
            segments.append((addr, length, bool(flags & F_WRITE)))
            if not flags & F_NEXT:
                break
            idx = nxt
        return DescriptorChain(self.mem, head, segments)

    cpdef void add_used(self, uint16_t head, uint32_t length) except *:
        """Return chain ``head`` to the driver with ``length`` bytes written into it."""
        if self.mem is None:
            raise VirtqueueError("queue used before it was made ready")
        cdef uint64_t slot = self.used_addr + 4 + 8 * <uint64_t>(self.next_used % self.size)
        cdef uint32_t id32 = head
        cdef uint8_t *p = self.mem.ptr(slot, 8)
        memcpy(p, &id32, 4)
        memcpy(p + 4, &length, 4)
        vq_fence_release()
        self.next_used += 1
        memcpy(self.mem.ptr(self.used_addr + 2, 2), &self.next_used, 2)

    cpdef bint needs_interrupt(self) except -1:
        """Whether the driver wants an interrupt for what was added since the last one (EVENT_IDX or flags)."""
        cdef uint16_t used_event, new, old
        if self.mem is None:
            return False
        vq_fence_full()
        if not self.event_idx:
            return not (_u16(self.mem, self.avail_addr) & AVAIL_F_NO_INTERRUPT)
        used_event = _u16(self.mem, self.avail_addr + 4 + 2 * <uint64_t>self.size)
        new = self.next_used
        old = self.signalled_used
        self.signalled_used = new
        if not self.signalled_valid:
            self.signalled_valid = True
            return True
        return <uint16_t>(new - used_event - 1) < <uint16_t>(new - old)
