# cython: language_level=3
"""Charging what requests allocate to a share's quota account (see ``charge.pyx``)."""

from libc.stdint cimport int64_t
from posix.stat cimport struct_stat
from _vmcore.fs.quota cimport QuotaAccount, INODE_COST

cdef enum:
    BLOCK = 4096
    SYMLINK_INLINE = 60         # ext4 keeps a target this short in the inode itself


cdef inline int64_t round_up(int64_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK * BLOCK


cdef inline int64_t round_down(int64_t n) noexcept nogil:
    return n // BLOCK * BLOCK


cdef inline int64_t inode_cost(const struct_stat *st) noexcept nogil:
    return <int64_t>st.st_blocks * 512 + INODE_COST


cdef int64_t write_need(const struct_stat *st, int64_t off, int64_t length) noexcept
cdef int64_t write_fit(QuotaAccount account, const struct_stat *st, int64_t off, int64_t length) noexcept
cdef int64_t reserve_write(QuotaAccount account, const struct_stat *st, int64_t off, int64_t *length) noexcept
cdef void settle_file(QuotaAccount account, int64_t reserved, int64_t before, int fd) noexcept
cdef bint charge_inode(QuotaAccount account, int64_t reserved, int dirfd, const char *name) noexcept
cdef int64_t released_bytes(QuotaAccount account, int dirfd, const char *name)
