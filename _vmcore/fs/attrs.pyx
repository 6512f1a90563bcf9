# cython: language_level=3
"""FUSE requests about an inode rather than its contents: LOOKUP (a name in a directory), GETATTR and SETATTR,
ACCESS, READLINK and STATFS."""

from libc.errno cimport EINVAL, ENOENT, EISDIR, EFBIG, EROFS, EOPNOTSUPP
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, INT64_MAX
from posix.stat cimport struct_stat
from posix.time cimport timespec

from _vmcore.fs.abi cimport *
from _vmcore.fs.charge cimport settle_file
from _vmcore.fs.handles cimport Handle
from _vmcore.fs.inodes cimport Inode, entry_at, reopen
from _vmcore.fs.state cimport ServerState
from _vmcore.fs.wire cimport neg_errno, fill_attr, check_name, MODE_BITS, STAT_FLAGS


cdef Py_ssize_t op_lookup(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o):
    cdef size_t used
    cdef int r = check_name(b, n, &used)
    if r < 0:
        return r
    cdef Py_ssize_t found = entry_at(srv, parent, <const char *>b, <fuse_entry_out *>o)
    cdef fuse_entry_out *e = <fuse_entry_out *>o
    if found == -ENOENT and (srv.neg_sec or srv.neg_nsec):  # nodeid 0: the kernel keeps a negative dentry
        memset(e, 0, sizeof(fuse_entry_out))
        e.entry_valid = srv.neg_sec
        e.entry_valid_nsec = srv.neg_nsec
        return sizeof(fuse_entry_out)
    return found


cdef Py_ssize_t op_getattr(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o):
    cdef struct_stat st
    cdef fuse_attr_out *a = <fuse_attr_out *>o
    cdef Handle hd = None
    cdef int rc
    if n >= sizeof(fuse_getattr_in) and (<const fuse_getattr_in *>b).getattr_flags & FUSE_GETATTR_FH:
        hd = srv.handles.get((<const fuse_getattr_in *>b).fh)
    rc = fstat(hd.fd, &st) if hd is not None else fstatat(ino.fd, "", &st, STAT_FLAGS)
    if rc < 0:
        return neg_errno()
    memset(a, 0, sizeof(fuse_attr_out))
    a.attr_valid = srv.t_sec
    a.attr_valid_nsec = srv.t_nsec
    fill_attr(&a.attr, &st)
    return sizeof(fuse_attr_out)


cdef Py_ssize_t op_setattr(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o):
    cdef fuse_setattr_in s
    cdef struct_stat st
    cdef Handle hd = None
    cdef char num[24]
    cdef timespec ts[2]
    cdef int fd, rc
    cdef int64_t growth
    if n < sizeof(fuse_setattr_in):
        return -EINVAL
    memcpy(&s, b, sizeof(fuse_setattr_in))
    if s.valid & FATTR_FH:
        hd = srv.handles.get(s.fh)
    snprintf(num, 24, "%d", ino.fd)
    if s.valid & FATTR_MODE:
        if ino.kind == S_IFLNK:
            return -EOPNOTSUPP
        rc = fchmod(hd.fd, s.mode & MODE_BITS) if hd is not None else fchmodat(srv.proc_fd, num,
                                                                             s.mode & MODE_BITS, 0)
        if rc < 0:
            return neg_errno()
    if s.valid & (FATTR_UID | FATTR_GID):
        if fchownat(ino.fd, "", s.uid if s.valid & FATTR_UID else <uint32_t>-1,
                    s.gid if s.valid & FATTR_GID else <uint32_t>-1, STAT_FLAGS) < 0:
            return neg_errno()
    if s.valid & FATTR_SIZE:
        if ino.kind != S_IFREG:
            return -EISDIR if ino.kind == S_IFDIR else -EINVAL
        if s.size > <uint64_t>INT64_MAX:
            return -EFBIG
        fd = hd.fd if hd is not None and hd.writable else reopen(srv, ino, O_WRONLY)
        if fd < 0:
            return neg_errno()
        rc = fstat(fd, &st)                          # truncating up allocates nothing; down frees blocks
        if rc == 0:
            with nogil:
                rc = ftruncate(fd, s.size)
        err = neg_errno()
        if rc == 0:
            settle_file(srv.account, 0, <int64_t>st.st_blocks * 512, fd)
        if hd is None or not hd.writable:
            close(fd)
        if rc < 0:
            return err
    if s.valid & (FATTR_ATIME | FATTR_MTIME):
        ts[0].tv_nsec = UTIME_OMIT
        ts[1].tv_nsec = UTIME_OMIT
        if s.valid & FATTR_ATIME:
            ts[0].tv_sec = s.atime
            ts[0].tv_nsec = UTIME_NOW if s.valid & FATTR_ATIME_NOW else s.atimensec
        if s.valid & FATTR_MTIME:
            ts[1].tv_sec = s.mtime
            ts[1].tv_nsec = UTIME_NOW if s.valid & FATTR_MTIME_NOW else s.mtimensec
        if ino.kind == S_IFLNK:
            rc = utimensat(ino.fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
        else:
            rc = utimensat(srv.proc_fd, num, ts, 0)
        if rc < 0:
            return neg_errno()
    return op_getattr(srv, ino, NULL, 0, o)


cdef Py_ssize_t op_access(ServerState srv, Inode ino, const uint8_t *b, size_t n):
    cdef char num[24]
    if n < sizeof(fuse_access_in):
        return -EINVAL
    cdef uint32_t mask = (<const fuse_access_in *>b).mask
    if srv.readonly and (mask & W_OK):
        return -EROFS
    if ino.kind == S_IFLNK:
        return 0
    snprintf(num, 24, "%d", ino.fd)
    if faccessat(srv.proc_fd, num, mask, 0) < 0:
        return neg_errno()
    return 0


cdef Py_ssize_t op_readlink(ServerState srv, Inode ino, uint8_t *o, size_t cap):
    cdef ssize_t got = 0
    if ino.kind != S_IFLNK:
        return -EINVAL
    got = readlinkat(ino.fd, "", <char *>o, cap)
    if got < 0:
        return neg_errno()
    return got


cdef Py_ssize_t op_statfs(ServerState srv, Inode ino, uint8_t *o):
    cdef statvfs sv
    cdef fuse_statfs_out *r = <fuse_statfs_out *>o
    cdef uint64_t frsize
    if fstatvfs(ino.fd, &sv) < 0:
        return neg_errno()
    memset(r, 0, sizeof(fuse_statfs_out))
    r.st.bsize = sv.f_bsize
    r.st.frsize = sv.f_frsize
    r.st.namelen = sv.f_namemax
    r.st.files = sv.f_files
    r.st.ffree = sv.f_ffree
    r.st.blocks = sv.f_blocks
    r.st.bfree = sv.f_bfree
    r.st.bavail = sv.f_bavail
    if srv.account is not None:
        frsize = sv.f_frsize if sv.f_frsize else 4096
        r.st.blocks = <uint64_t>srv.account.limit // frsize
        free_blocks = <uint64_t>srv.account.available // frsize
        r.st.bfree = min(free_blocks, sv.f_bfree)
        r.st.bavail = min(free_blocks, sv.f_bavail)
    return sizeof(fuse_statfs_out)
