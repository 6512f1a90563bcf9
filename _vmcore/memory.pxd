# cython: language_level=3
from libc.stdint cimport uint8_t, uint64_t

cdef class GuestMemory:
    cdef uint8_t *base
    cdef readonly uint64_t size
    cdef readonly str kind
    cdef uint8_t *ptr(self, uint64_t gpa, uint64_t length) except NULL
    cdef bint contains(self, uint64_t gpa, uint64_t length) noexcept nogil
