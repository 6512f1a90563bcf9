# cython: language_level=3
from libc.stdint cimport uint32_t, uint64_t
from _vmcore.memory cimport GuestMemory

cdef class VirtioDevice:
    cdef public uint32_t device_id
    cdef public uint64_t avail_features
    cdef public uint64_t acked_features
    cdef public list queues
    cdef public GuestMemory mem
    cdef public object interrupt
    cdef public str error
    cdef public bint activated
    cpdef bytes config_bytes(self)
    cpdef void write_config(self, uint64_t offset, bytes data) except *
    cpdef void activate(self) except *
    cpdef void process_queue(self, int index) except *
    cpdef void reset(self) except *
    cpdef void signal_used(self, int index) except *
