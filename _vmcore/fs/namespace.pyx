# cython: language_level=3
"""FUSE requests that change the tree's names: CREATE, MKDIR, MKNOD, SYMLINK and LINK (made as the caller, each new
inode charged to the quota first) and UNLINK/RMDIR and RENAME(2) (what they free given back)."""

from libc.errno cimport errno, EACCES, EINVAL, EBADF, ENOSPC, EPERM, ENOENT, ENAMETOOLONG
from libc.string cimport memchr, memcpy, memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from posix.stat cimport struct_stat

from _vmcore.fs.abi cimport *
from _vmcore.fs.charge cimport (settle_file, charge_inode, released_bytes, round_up, BLOCK, INODE_COST,
                                SYMLINK_INLINE)
from _vmcore.fs.creds cimport become, unbecome
from _vmcore.fs.handles cimport new_handle
from _vmcore.fs.inodes cimport Inode, entry_at, entry_from_open_fd
from _vmcore.fs.state cimport ServerState
from _vmcore.fs.wire cimport neg_errno, check_name, MODE_BITS, PASS_FLAGS, PATH_MAX


cdef Py_ssize_t op_create(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                          uint32_t gid):
    cdef fuse_create_in c
    cdef struct_stat st
    cdef size_t used
    cdef int fd, rc
    cdef Py_ssize_t er
    if n < sizeof(fuse_create_in):
        return -EINVAL
    memcpy(&c, b, sizeof(fuse_create_in))
    rc = check_name(b + sizeof(fuse_create_in), n - sizeof(fuse_create_in), &used)
    if rc < 0:
        return rc
    cdef const char *name = <const char *>(b + sizeof(fuse_create_in))
    if (c.mode & S_IFMT) not in (0, S_IFREG):
        return -EPERM
    cdef int64_t before = -1, reserved = 0           # before: the blocks of the file it opens, if it exists
    if srv.account is not None:
        if fstatat(parent.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0:
            before = <int64_t>st.st_blocks * 512
        else:
            reserved = INODE_COST
            if not srv.account.reserve(reserved):
                return -ENOSPC
    become(srv.switch_creds, uid, gid)
    # O_NONBLOCK: a name that already is a FIFO would otherwise hold this server in open() until a peer came
    fd = openat(parent.fd, name, (c.flags & (PASS_FLAGS | O_EXCL)) | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
                c.mode & MODE_BITS)
    rc = neg_errno()
    unbecome(srv.switch_creds, uid, gid)
    if fd >= 0 and (fstat(fd, &st) < 0 or (st.st_mode & S_IFMT) != S_IFREG):
        close(fd)                        # an existing FIFO, device or socket: never served as a file (as reopen)
        fd, rc = -1, -EACCES
    if fd >= 0 and not (c.flags & O_NONBLOCK):
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)   # a regular file's reads ignore it; kept honest
    if srv.account is not None:
        if fd < 0:
            srv.account.settle(reserved, 0)
        elif before < 0:
            charge_inode(srv.account, reserved, parent.fd, name)
        else:
            settle_file(srv.account, 0, before, fd)
    if fd < 0:
        return rc
    cdef fuse_entry_out entry            # built privately: the reply buffer may be shared with a guest
    er = entry_from_open_fd(srv, fd, &entry)
    if er < 0:
        close(fd)
        return er
    memcpy(o, &entry, sizeof(fuse_entry_out))
    cdef fuse_open_out *r = <fuse_open_out *>(o + sizeof(fuse_entry_out))
    memset(r, 0, sizeof(fuse_open_out))
    r.open_flags = srv.open_flags
    ino = srv.inodes[entry.nodeid]
    r.fh = new_handle(srv, fd, ino, False, (c.flags & O_ACCMODE) != O_RDONLY)
    return sizeof(fuse_entry_out) + sizeof(fuse_open_out)


cdef Py_ssize_t op_mkdir(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid):
    cdef size_t used
    if n < sizeof(fuse_mkdir_in):
        return -EINVAL
    cdef int rc = check_name(b + sizeof(fuse_mkdir_in), n - sizeof(fuse_mkdir_in), &used)
    if rc < 0:
        return rc
    cdef const char *name = <const char *>(b + sizeof(fuse_mkdir_in))
    cdef int64_t reserved = INODE_COST + BLOCK
    if srv.account is not None and not srv.account.reserve(reserved):
        return -ENOSPC
    become(srv.switch_creds, uid, gid)
    rc = mkdirat(parent.fd, name, (<const fuse_mkdir_in *>b).mode & MODE_BITS)
    err = neg_errno()
    unbecome(srv.switch_creds, uid, gid)
    charge_inode(srv.account, reserved, parent.fd, name if rc == 0 else NULL)
    if rc < 0:
        return err
    return entry_at(srv, parent, name, <fuse_entry_out *>o)


cdef Py_ssize_t op_mknod(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid):
    cdef size_t used
    if n < sizeof(fuse_mknod_in):
        return -EINVAL
    cdef uint32_t mode = (<const fuse_mknod_in *>b).mode
    cdef int rc = check_name(b + sizeof(fuse_mknod_in), n - sizeof(fuse_mknod_in), &used)
    if rc < 0:
        return rc
    if (mode & S_IFMT) != S_IFREG and (mode & S_IFMT) != S_IFIFO:
        return -EPERM                                # no devices or sockets on the host
    cdef const char *name = <const char *>(b + sizeof(fuse_mknod_in))
    if srv.account is not None and not srv.account.reserve(INODE_COST):
        return -ENOSPC
    become(srv.switch_creds, uid, gid)
    rc = mknodat(parent.fd, name, (mode & S_IFMT) | (mode & MODE_BITS), 0)
    err = neg_errno()
    unbecome(srv.switch_creds, uid, gid)
    charge_inode(srv.account, INODE_COST, parent.fd, name if rc == 0 else NULL)
    if rc < 0:
        return err
    return entry_at(srv, parent, name, <fuse_entry_out *>o)


cdef Py_ssize_t op_symlink(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                           uint32_t gid):
    cdef size_t used
    cdef int rc = check_name(b, n, &used)
    if rc < 0:
        return rc
    cdef const uint8_t *target = b + used
    cdef const uint8_t *z = <const uint8_t *>memchr(target, 0, n - used)
    if z == NULL:
        return -EINVAL
    if z == target:
        return -ENOENT
    if z - target >= PATH_MAX:
        return -ENAMETOOLONG
    # The target is stored verbatim and never resolved by us: it only means something inside the guest.
    cdef int64_t reserved = INODE_COST + (round_up(z - target) if z - target >= SYMLINK_INLINE else 0)
    if srv.account is not None and not srv.account.reserve(reserved):
        return -ENOSPC
    become(srv.switch_creds, uid, gid)
    rc = symlinkat(<const char *>target, parent.fd, <const char *>b)
    err = neg_errno()
    unbecome(srv.switch_creds, uid, gid)
    charge_inode(srv.account, reserved, parent.fd, <const char *>b if rc == 0 else NULL)
    if rc < 0:
        return err
    return entry_at(srv, parent, <const char *>b, <fuse_entry_out *>o)


cdef Py_ssize_t op_link(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o):
    cdef size_t used
    cdef char num[24]
    if n < sizeof(fuse_link_in):
        return -EINVAL
    cdef int rc = check_name(b + sizeof(fuse_link_in), n - sizeof(fuse_link_in), &used)
    if rc < 0:
        return rc
    cdef Inode src = srv.inodes.get((<const fuse_link_in *>b).oldnodeid)
    if src is None:
        return -EBADF                                # only inodes already reached through the share
    if src.kind == S_IFDIR:
        return -EPERM
    cdef const char *name = <const char *>(b + sizeof(fuse_link_in))
    if linkat(src.fd, "", parent.fd, name, AT_EMPTY_PATH) < 0:
        if errno != ENOENT or src.kind == S_IFLNK:
            return neg_errno()
        snprintf(num, 24, "%d", src.fd)              # without CAP_DAC_READ_SEARCH: through the magic link
        if linkat(srv.proc_fd, num, parent.fd, name, AT_SYMLINK_FOLLOW) < 0:
            return neg_errno()
    return entry_at(srv, parent, name, <fuse_entry_out *>o)


cdef Py_ssize_t op_unlink(ServerState srv, Inode parent, const uint8_t *b, size_t n, int flags):
    cdef size_t used
    cdef int rc = check_name(b, n, &used)
    if rc < 0:
        return rc
    cdef int64_t freed = released_bytes(srv.account, parent.fd, <const char *>b)
    if unlinkat(parent.fd, <const char *>b, flags) < 0:
        return neg_errno()
    if freed:
        srv.account.settle(0, -freed)
    return 0


cdef Py_ssize_t op_rename(ServerState srv, Inode parent, uint64_t newdir, uint32_t flags, const uint8_t *b, size_t n):
    cdef size_t used_old, used_new
    cdef int64_t freed = 0
    if flags & ~(<uint32_t>(RENAME_NOREPLACE | RENAME_EXCHANGE)):
        return -EINVAL                               # RENAME_WHITEOUT would make a device node
    cdef int rc = check_name(b, n, &used_old)
    if rc < 0:
        return rc
    rc = check_name(b + used_old, n - used_old, &used_new)
    if rc < 0:
        return rc
    cdef Inode dst = srv.inodes.get(newdir)
    if dst is None:
        return -EBADF
    cdef const char *newname = <const char *>(b + used_old)
    if flags == 0:
        freed = released_bytes(srv.account, dst.fd, newname)
    if renameat2(parent.fd, <const char *>b, dst.fd, newname, flags) < 0:
        return neg_errno()
    if freed:
        srv.account.settle(0, -freed)
    return 0
