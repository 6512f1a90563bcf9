# cython: language_level=3
"""Charging what requests allocate to a share's quota account (``quota.QuotaAccount``): how much a write may
allocate and how much of it fits, and settling a reservation with what a file or a new inode really cost (or what an
unlink gave back). The block arithmetic is ext4's; the handlers reserve before they allocate and settle after."""

from libc.stdint cimport int64_t
from posix.stat cimport struct_stat

from _vmcore.fs.abi cimport fstat, fstatat, AT_SYMLINK_NOFOLLOW, S_IFMT, S_IFDIR


cdef int64_t write_need(const struct_stat *st, int64_t off, int64_t length) noexcept:
    """The most a write of ``length`` at ``off`` can allocate in the file ``st``: nothing when it overwrites a
    file without holes, else its new blocks and one for the file's extent tree."""
    cdef int64_t size = st.st_size
    cdef bint holes = <int64_t>st.st_blocks * 512 < round_up(size)
    if length <= 0 or (off + length <= size and not holes):
        return 0
    return round_up(off + length) - round_down(off if holes or off > size else size) + BLOCK


cdef int64_t write_fit(QuotaAccount account, const struct_stat *st, int64_t off, int64_t length) noexcept:
    """How much of a write that extends the file fits in what is left of the quota (0: none)."""
    cdef int64_t room = account.available - 2 * BLOCK
    cdef int64_t start = off if off > st.st_size else st.st_size
    if room <= 0 or off + length <= st.st_size:
        return 0
    cdef int64_t end = round_down(start) + round_down(room)
    return min(length, end - off) if end > off else 0


cdef int64_t reserve_write(QuotaAccount account, const struct_stat *st, int64_t off, int64_t *length) noexcept:
    """Reserve for a write of ``length`` at ``off`` (shortened to what fits); -1: nothing fits."""
    cdef int64_t need = write_need(st, off, length[0])
    if account.reserve(need):
        return need
    length[0] = write_fit(account, st, off, length[0])
    need = write_need(st, off, length[0])
    if length[0] <= 0 or not account.reserve(need):
        return -1
    return need


cdef void settle_file(QuotaAccount account, int64_t reserved, int64_t before, int fd) noexcept:
    """Charge what the file on ``fd`` really gained since it had ``before`` bytes of blocks (or freed)."""
    cdef struct_stat st
    if account is None:
        return
    if fstat(fd, &st) < 0:
        return                                       # unknown: keep the reservation
    account.settle(reserved, <int64_t>st.st_blocks * 512 - before)


cdef bint charge_inode(QuotaAccount account, int64_t reserved, int dirfd, const char *name) noexcept:
    """Settle a new inode's reservation with what it costs (nothing when it was not made)."""
    cdef struct_stat st
    if account is None:
        return True
    if name == NULL or fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0:
        account.settle(reserved, 0)
    else:
        account.settle(reserved, inode_cost(&st))
    return True


cdef int64_t released_bytes(QuotaAccount account, int dirfd, const char *name):
    """What a successful unlink/rmdir/overwrite of ``name`` gives back to the quota (its last link)."""
    cdef struct_stat st
    if account is None or fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0:
        return 0
    if (st.st_mode & S_IFMT) == S_IFDIR or st.st_nlink == 1:
        return inode_cost(&st)
    return 0
