# cython: language_level=3
"""The inode table of the FUSE server: every inode the guest holds is an ``O_PATH | O_NOFOLLOW`` descriptor, named by
a nodeid and counted by lookups (``intern``, ``forget``); a lookup is one ``openat`` beneath its parent's descriptor
(``entry_at``), and a file is opened again only through its ``/proc/self/fd`` magic link (``reopen``). The handlers
reach inodes only through these functions; ``FuseServer`` makes the root inode and drops the rest on a reset."""

from libc.errno cimport ELOOP, EACCES
from libc cimport errno as cerrno
from libc.string cimport memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from posix.stat cimport struct_stat

from _vmcore.fs.abi cimport *
from _vmcore.fs.state cimport ServerState
from _vmcore.fs.wire cimport neg_errno, fill_attr, PATH_FLAGS, STAT_FLAGS

cdef extern from "<sys/vfs.h>" nogil:
    ctypedef struct kstatfs "struct statfs":
        long f_type
    int fstatfs(int fd, kstatfs *buf)

# File systems whose files the host kernel answers about itself or its processes (linux/magic.h): procfs, sysfs,
# debugfs, tracefs, securityfs, cgroup v1 and v2, bpffs, pstore, efivarfs, configfs, binfmt_misc, fusectl. A share
# that holds one of them as a mount (the host image shares '/') never serves it: a guest reading the host's
# /proc/PID/root through us would read what every process of the host's can.
cdef set HOST_KERNEL_FILESYSTEMS = {0x9fa0, 0x62656572, 0x64626720, 0x74726163, 0x73636673, 0x27e0eb, 0x63677270,
                                    0xcafe4a11, 0x6165676C, 0xde5e81e4, 0x62656570, 0x42494e4d, 0x65735543}


cdef class Inode:
    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1


cdef uint64_t intern(ServerState srv, int fd, const struct_stat *st):
    """Adopt ``fd`` (O_PATH) as an inode, or count one more lookup of a known one (closing ``fd``)."""
    cdef Inode ino
    key = (st.st_dev, st.st_ino)
    nodeid = srv.by_key.get(key)
    if nodeid is not None:
        ino = srv.inodes[nodeid]
        ino.nlookup += 1
        close(fd)
        return nodeid
    ino = Inode()
    ino.fd = fd
    ino.dev = st.st_dev
    ino.ino = st.st_ino
    ino.kind = st.st_mode & S_IFMT
    ino.nlookup = 1
    nodeid = srv.next_nodeid
    srv.next_nodeid += 1
    srv.inodes[nodeid] = ino
    srv.by_key[key] = nodeid
    return nodeid


cdef void forget(ServerState srv, uint64_t nodeid, uint64_t count):
    cdef Inode ino
    if nodeid == FUSE_ROOT_ID:
        return
    ino = srv.inodes.get(nodeid)
    if ino is None:
        return
    ino.nlookup = ino.nlookup - count if ino.nlookup > count else 0
    if ino.nlookup == 0:
        del srv.inodes[nodeid]
        srv.by_key.pop((ino.dev, ino.ino), None)


cdef void batch_forget(ServerState srv, const uint8_t *b, size_t n):
    cdef uint32_t count, k
    cdef const fuse_forget_one *one
    if n < 8:
        return
    count = (<const fuse_batch_forget_in *>b).count
    if count > (n - 8) // sizeof(fuse_forget_one):
        count = <uint32_t>((n - 8) // sizeof(fuse_forget_one))   # never past the body
    one = <const fuse_forget_one *>(b + 8)
    for k in range(count):
        forget(srv, one[k].nodeid, one[k].nlookup)


cdef void fill_entry(ServerState srv, fuse_entry_out *e, uint64_t nodeid, const struct_stat *st) noexcept:
    memset(e, 0, sizeof(fuse_entry_out))
    e.nodeid = nodeid
    e.entry_valid = srv.t_sec
    e.attr_valid = srv.t_sec
    e.entry_valid_nsec = srv.t_nsec
    e.attr_valid_nsec = srv.t_nsec
    fill_attr(&e.attr, st)


cdef Py_ssize_t entry_at(ServerState srv, Inode directory, const char *name, fuse_entry_out *e):
    """Look ``name`` up in ``directory`` without following it; fills ``e`` and counts one lookup."""
    cdef struct_stat st
    cdef kstatfs fs
    cdef int fd = openat(directory.fd, name, PATH_FLAGS)
    if fd < 0:
        return neg_errno()
    if fstatat(fd, "", &st, STAT_FLAGS) < 0:
        r = neg_errno()
        close(fd)
        return r
    if (st.st_mode & S_IFMT) == S_IFDIR and st.st_dev != directory.dev:  # a mount point: what is mounted there?
        if fstatfs(fd, &fs) < 0 or <unsigned long>fs.f_type in HOST_KERNEL_FILESYSTEMS:
            close(fd)
            return -EACCES
    fill_entry(srv, e, intern(srv, fd, &st), &st)
    return sizeof(fuse_entry_out)


cdef Py_ssize_t entry_from_open_fd(ServerState srv, int fd, fuse_entry_out *e):
    """An inode for the file behind an open descriptor, reached through its magic link (no path walk)."""
    cdef struct_stat st
    cdef char num[24]
    snprintf(num, 24, "%d", fd)
    cdef int pfd = openat(srv.proc_fd, num, O_PATH | O_CLOEXEC)
    if pfd < 0:
        return neg_errno()
    if fstat(pfd, &st) < 0:
        r = neg_errno()
        close(pfd)
        return r
    fill_entry(srv, e, intern(srv, pfd, &st), &st)
    return sizeof(fuse_entry_out)


cdef int reopen(ServerState srv, Inode ino, int flags):
    """A real descriptor for a regular file or directory inode (never a symlink: those are not opened)."""
    cdef char num[24]
    if ino.kind != S_IFREG and ino.kind != S_IFDIR:
        cerrno.errno = ELOOP if ino.kind == S_IFLNK else EACCES
        return -1
    snprintf(num, 24, "%d", ino.fd)
    return openat(srv.proc_fd, num, (flags & ~(O_CREAT | O_EXCL)) | O_CLOEXEC)
