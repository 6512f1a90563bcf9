# cython: language_level=3
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from _vmcore.memory cimport GuestMemory

cdef class DescriptorChain:
    cdef readonly uint16_t head
    cdef readonly list segments
    cdef readonly uint64_t readable_len
    cdef readonly uint64_t writable_len
    cdef GuestMemory mem
    cpdef bytes read_readable(self, uint64_t skip=*, uint64_t limit=*)
    cpdef uint64_t write_writable(self, uint64_t offset, const unsigned char[::1] data)

cdef class Virtqueue:
    cdef readonly uint16_t max_size
    cdef public uint16_t size
    cdef public bint ready
    cdef public uint64_t desc_addr
    cdef public uint64_t avail_addr
    cdef public uint64_t used_addr
    cdef public bint event_idx
    cdef public uint16_t next_avail
    cdef public uint16_t next_used
    cdef uint16_t signalled_used
    cdef bint signalled_valid
    cdef GuestMemory mem
    cpdef void attach(self, GuestMemory mem) except *
    cpdef DescriptorChain pop(self)
    cpdef void add_used(self, uint16_t head, uint32_t length) except *
    cpdef bint needs_interrupt(self) except -1
    cdef DescriptorChain _walk(self, uint16_t head)
