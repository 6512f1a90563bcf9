from libc.stdint cimport int64_t

cdef enum:
    INODE_COST = 256   # an inode's own cost beside its blocks (ext4's inode size): 3,000 empty files are not free


cdef class QuotaAccount:
    cdef readonly int64_t limit
    cdef readonly str path
    cdef int64_t *cell
    cdef object _map
    cdef object _view
    cdef int fd

    cdef void _attach(self) except *
    cdef void _leave(self) noexcept
    cpdef bint reserve(self, int64_t n)
    cpdef void settle(self, int64_t reserved, int64_t actual)
