from libc.stdint cimport uint8_t, uint64_t


cdef class BlockImage:
    cdef readonly str path
    cdef readonly str format
    cdef readonly bint read_only
    cdef readonly uint64_t size   # the guest-visible size in bytes
    cdef int fd

    cdef int read_at(self, uint64_t offset, uint8_t *buf, uint64_t length) except -1
    cdef int write_at(self, uint64_t offset, const uint8_t *buf, uint64_t length) except -1
    cdef int flush(self) except -1


cdef int pread_full(int fd, uint8_t *buf, uint64_t length, uint64_t offset) except -1
cdef int pwrite_full(int fd, const uint8_t *buf, uint64_t length, uint64_t offset) except -1
