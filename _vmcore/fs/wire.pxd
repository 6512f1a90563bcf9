# cython: language_level=3
"""Inline helpers shared by the FUSE request handlers: errno to reply, ``stat`` to ``fuse_attr``, name checks and
``iovec`` cutting, and the open flags every handler uses. Declarations and inline code only (no ``.pyx``): each module
that cimports it compiles its own copy, so none of it becomes a call into another module on the hot path."""

from libc.errno cimport errno, EINVAL, EIO, ENAMETOOLONG
from libc.string cimport memchr
from libc.stdint cimport uint8_t, uint32_t
from posix.stat cimport struct_stat
from posix.uio cimport iovec

from _vmcore.fs.abi cimport (fuse_attr, O_PATH, O_NOFOLLOW, O_CLOEXEC, O_ACCMODE, O_TRUNC, O_NONBLOCK, O_SYNC, O_DSYNC,
                             O_NOATIME, AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW)

cdef enum:
    NAME_MAX = 255
    PATH_MAX = 4096
    MODE_BITS = 0o7777
    PATH_FLAGS = O_PATH | O_NOFOLLOW | O_CLOEXEC
    STAT_FLAGS = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW
    # Open flags passed through from the guest; anything else (O_CREAT, O_NOFOLLOW games, O_DIRECT, O_APPEND: the
    # kernel sends explicit offsets) is dropped.
    PASS_FLAGS = O_ACCMODE | O_TRUNC | O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME


cdef inline int neg_errno() noexcept nogil:
    return -errno if errno else -EIO


cdef inline void fill_attr(fuse_attr *a, const struct_stat *st) noexcept nogil:
    a.ino = st.st_ino
    a.size = st.st_size
    a.blocks = st.st_blocks
    a.atime = st.st_atim.tv_sec
    a.mtime = st.st_mtim.tv_sec
    a.ctime = st.st_ctim.tv_sec
    a.atimensec = st.st_atim.tv_nsec
    a.mtimensec = st.st_mtim.tv_nsec
    a.ctimensec = st.st_ctim.tv_nsec
    a.mode = st.st_mode
    a.nlink = st.st_nlink
    a.uid = st.st_uid
    a.gid = st.st_gid
    a.rdev = <uint32_t>st.st_rdev
    a.blksize = st.st_blksize
    a.flags = 0


cdef inline int check_name(const uint8_t *p, size_t n, size_t *used) noexcept nogil:
    """A single path component, NUL-terminated inside the body: 0 or a negative errno."""
    cdef const uint8_t *z = <const uint8_t *>memchr(p, 0, n)
    if z == NULL:
        return -EINVAL
    cdef size_t length = z - p
    used[0] = length + 1
    if length == 0 or memchr(p, 47, length) != NULL:  # 47 == '/'
        return -EINVAL
    if p[0] == 46 and (length == 1 or (length == 2 and p[1] == 46)):  # "." and ".."
        return -EINVAL
    if length > NAME_MAX:
        return -ENAMETOOLONG
    return 0


cdef inline size_t iov_total(const iovec *iov, int cnt) noexcept nogil:
    cdef size_t total = 0
    cdef int i
    for i in range(cnt):
        total += iov[i].iov_len
    return total


cdef inline int iov_trim(iovec *iov, int cnt, size_t limit) noexcept nogil:
    """Cut ``iov`` (in place) to its first ``limit`` bytes; returns the new count."""
    cdef size_t acc = 0
    cdef int i
    for i in range(cnt):
        if acc + iov[i].iov_len >= limit:
            iov[i].iov_len = limit - acc
            return i + 1
        acc += iov[i].iov_len
    return cnt


cdef inline int iov_skip(iovec *iov, int cnt, size_t n) noexcept nogil:
    """Drop the first ``n`` bytes of ``iov`` (in place, after a partial transfer); returns the index of the first
    entry still holding bytes."""
    cdef int i = 0
    while i < cnt and n >= iov[i].iov_len:
        n -= iov[i].iov_len
        i += 1
    if i < cnt:
        iov[i].iov_base = <uint8_t *>iov[i].iov_base + n
        iov[i].iov_len -= n
    return i
