# cython: language_level=3
from libc.stdint cimport uint64_t

cdef class BusDevice:
    cpdef uint64_t read(self, uint64_t offset, unsigned int size)
    cpdef void write(self, uint64_t offset, unsigned int size, uint64_t value)

cdef class Bus:
    cdef list _ranges
    cdef readonly str name
    cdef readonly uint64_t unhandled
    cdef BusDevice find(self, uint64_t addr, uint64_t *offset)
    cpdef uint64_t read(self, uint64_t addr, unsigned int size)
    cpdef void write(self, uint64_t addr, unsigned int size, uint64_t value)
