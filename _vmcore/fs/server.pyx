# cython: language_level=3
"""The FUSE server core: one request in (header + body bytes), one reply out, transport-agnostic.

Confinement rules, enforced here for every transport:

- every inode is an ``O_PATH | O_NOFOLLOW`` descriptor; a lookup is one ``openat`` of a single validated name
  (not empty, not ``.``/``..``, no ``/``) beneath its parent's descriptor, so no path is ever walked on the host;
- symlinks are handed to the guest as symlinks; the server never follows one (files are reopened through
  ``/proc/self/fd/N`` only for regular files and directories, whose magic link points at the inode itself);
- hard links may only name inodes the guest already reached through the share;
- a read-only share answers ``EROFS`` to every mutating request, whatever the mount flags say;
- with a quota, every allocation (data blocks, new inodes of any kind) is charged to the directory's account
  (``quota.QuotaAccount``: one count shared by every server and host-side writer of the tree, in blocks, not
  apparent sizes) before it is made, and ``ENOSPC`` answers what does not fit; fallocate modes the FUSE client
  does not send are refused.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.errno cimport (errno, EINVAL, ENOSYS, EBADF, EROFS, ENOSPC, EIO, EPERM, ENOTDIR, EISDIR, ELOOP,
                         ERANGE, ENAMETOOLONG, EPROTO, EOPNOTSUPP, EFBIG, ENOENT, EACCES, EMFILE)
from libc.stdlib cimport malloc, free
from libc cimport errno as cerrno
from libc.string cimport memchr, memcpy, memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, INT64_MAX
from posix.stat cimport struct_stat
from posix.time cimport timespec
from posix.types cimport off_t, uid_t, gid_t
from posix.uio cimport iovec, preadv, pwritev

from _vmcore.fs.abi cimport *
from _vmcore.fs.quota cimport QuotaAccount, INODE_COST

import os
import resource
import sys

cdef enum:
    IN_HDR = 40
    OUT_HDR = 16
    MIN_REPLY = 16 + 256        # every fixed-size reply fits in this
    NAME_MAX = 255
    PATH_MAX = 4096
    MODE_BITS = 0o7777
    OUR_MINOR_MIN = 31

cdef extern from "<sys/fsuid.h>" nogil:
    int setfsuid(uid_t uid)
    int setfsgid(gid_t gid)

cdef extern from "<linux/capability.h>" nogil:
    ctypedef struct cap_header "struct __user_cap_header_struct":
        uint32_t version
        int pid
    ctypedef struct cap_data "struct __user_cap_data_struct":
        uint32_t effective
        uint32_t permitted
        uint32_t inheritable
    enum: _LINUX_CAPABILITY_VERSION_3, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH

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


cdef extern from "<sys/syscall.h>" nogil:
    long syscall(long number, ...)
    enum: SYS_capget, SYS_capset

cdef int PATH_FLAGS = O_PATH | O_NOFOLLOW | O_CLOEXEC
cdef int STAT_FLAGS = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW
# Open flags passed through from the guest; anything else (O_CREAT, O_NOFOLLOW games, O_DIRECT, O_APPEND: the
# kernel sends explicit offsets) is dropped.
cdef int PASS_FLAGS = O_ACCMODE | O_TRUNC | O_NONBLOCK | O_SYNC | O_DSYNC | O_NOATIME


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


cdef class _Inode:
    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1


cdef class _Handle:
    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1


_held_proc_fd = (-1, -1)  # (pid, descriptor of /proc/self/fd) held by ``hold_proc_access``


def hold_proc_access() -> None:
    """Open now what servers made later need of ``/proc`` (``/proc/self/fd``, the descriptor limit), for a process
    about to lose ``/proc`` (the VMM's jail holds none: another process's ``/proc/PID/root`` would be a way out)."""
    global _held_proc_fd
    _raise_fd_limit()
    _held_proc_fd = (os.getpid(), os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))


def _proc_self_fd() -> int:
    pid, fd = _held_proc_fd
    if pid == os.getpid():  # "self" is resolved when opened: a forked child's inherited one is its parent's
        return os.dup(fd)
    return os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _raise_fd_limit() -> None:
    """Every inode the guest holds is an open descriptor: lift RLIMIT_NOFILE as far as this process may, to the
    kernel's ceiling (``fs.nr_open``) where it may raise the hard limit (CAP_SYS_RESOURCE), else to the hard limit.
    Past it, lookups and creates answer EMFILE and the server says so once on stderr (the sandbox's console log)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            ceiling = int(f.read(32))
    except (OSError, ValueError):
        ceiling = 0
    attempts = [(ceiling, ceiling)] if hard != resource.RLIM_INFINITY and ceiling > hard else []
    attempts.append((ceiling if hard == resource.RLIM_INFINITY else hard, hard))
    for limits in attempts:
        if limits[0] <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return
        except (OSError, ValueError):
            continue


def _warn_fd_limit(inodes: int, handles: int) -> None:
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        sys.stderr.write(f"msb-fs: out of file descriptors (limit {soft}) with {inodes} inodes and {handles} open "
                         "files served: the guest gets EMFILE; raise the hard limit (ulimit -Hn, LimitNOFILE=) to "
                         "serve more\n")
        sys.stderr.flush()
    except Exception:
        pass  # a warning must never fail a request


cdef enum:
    BLOCK = 4096
    FALLOC_PUNCH_HOLE = 0x02
    FALLOC_ZERO_RANGE = 0x10
    SYMLINK_INLINE = 60         # ext4 keeps a target this short in the inode itself


cdef inline int64_t round_up(int64_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK * BLOCK


cdef inline int64_t round_down(int64_t n) noexcept nogil:
    return n // BLOCK * BLOCK


cdef inline int64_t inode_cost(const struct_stat *st) noexcept nogil:
    return <int64_t>st.st_blocks * 512 + INODE_COST


cdef class FuseServer:
    """Serves the directory ``root`` over the FUSE protocol (7.31+), one request at a time per call.

    ``handle(request) -> reply`` (empty bytes where the protocol wants no reply) and ``handle_into(request,
    reply_buffer) -> length`` for Python callers; ``handle_raw`` for Cython transports (zero copy: READ data goes
    straight into the caller's reply buffer, WRITE data straight from its request buffer).
    """

    def __cinit__(self):
        self.root_fd = -1
        self.proc_fd = -1

    def __init__(self, root, *, bint readonly=False, quota_mib=None, double cache_timeout=1.0,
                 negative_timeout=None, no_open=None, uint32_t max_write=1 << 20):
        """``cache_timeout``: how long the guest may trust a name and its attributes (and keep file pages across
        opens); ``negative_timeout``: how long it may trust that a name is missing (default: ``cache_timeout`` for
        a read-only share, where only the host can add one, else 0: the guest sees a file the host adds at once);
        ``no_open`` (default: read-only): the guest opens files and directories without asking (reads name the
        inode), which saves two requests per open."""
        if max_write < 4096 or max_write > (1 << 20):
            raise ValueError("max_write must be between 4096 and 1 MiB")
        if quota_mib is not None and quota_mib < 0:
            raise ValueError("quota_mib must be >= 0")
        if cache_timeout < 0:
            raise ValueError("cache_timeout must be >= 0")
        negative = (cache_timeout if readonly else 0.0) if negative_timeout is None else float(negative_timeout)
        if negative < 0:
            raise ValueError("negative_timeout must be >= 0")
        root = os.fspath(root)
        _raise_fd_limit()
        self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.proc_fd = _proc_self_fd()
        st = os.fstat(self.root_fd)
        root_inode = _Inode()
        root_inode.fd = os.dup(self.root_fd)
        root_inode.dev = st.st_dev
        root_inode.ino = st.st_ino
        root_inode.kind = S_IFDIR
        root_inode.nlookup = 1
        self.inodes = {FUSE_ROOT_ID: root_inode}
        self.by_key = {(st.st_dev, st.st_ino): FUSE_ROOT_ID}
        self.handles = {}
        self.next_nodeid = FUSE_ROOT_ID + 1
        self.next_fh = 1
        self.readonly = readonly
        self.max_write = max_write
        self.t_sec = <uint64_t>cache_timeout
        self.t_nsec = <uint32_t>((cache_timeout - self.t_sec) * 1e9)
        self.neg_sec = <uint64_t>negative
        self.neg_nsec = <uint32_t>((negative - self.neg_sec) * 1e9)
        self.no_open = readonly if no_open is None else bool(no_open)
        self.account = None if quota_mib is None else QuotaAccount(root, <int64_t>quota_mib * 1024 * 1024)
        # With attribute caching on, keep file pages cached across opens; AUTO_INVAL_DATA still drops them when
        # the kernel sees the size or mtime change.
        self.open_flags = FOPEN_KEEP_CACHE if cache_timeout > 0 else 0
        self.switch_creds = os.geteuid() == 0 and os.getegid() == 0

    def __dealloc__(self):
        self._close_fds()

    cdef void _close_fds(self) noexcept:
        if self.root_fd >= 0:
            close(self.root_fd)
            self.root_fd = -1
        if self.proc_fd >= 0:
            close(self.proc_fd)
            self.proc_fd = -1

    def reset(self) -> None:
        """Back to the state before INIT (a virtio-fs device reset): every handle and inode but the root dropped."""
        if not self.closed:
            self._reset()
            self.initialized = False

    def close(self) -> None:
        """Drop every inode and handle descriptor and leave the quota account; later requests get EIO."""
        self.closed = True
        self.handles = {}
        self.inodes = {}
        self.by_key = {}
        self._close_fds()
        if self.account is not None:
            self.account.close()

    @property
    def used_bytes(self) -> int:
        """What the tree costs, by its quota account (every server and writer of it): 0 without a quota."""
        return self.account.used if self.account is not None else 0

    @property
    def quota_bytes(self):
        return self.account.limit if self.account is not None else None

    def request_counts(self) -> dict:
        """Requests served so far, by opcode number."""
        return {op: self.counts[op] for op in range(64) if self.counts[op]}

    @property
    def inode_count(self) -> int:
        return len(self.inodes)

    @property
    def handle_count(self) -> int:
        return len(self.handles)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- public entry points ------------------------------------------------------------------------------

    def handle(self, request) -> bytes:
        """Serve one request; returns the reply bytes (b"" for FORGET/BATCH_FORGET, which get none)."""
        cdef Py_buffer view
        PyObject_GetBuffer(request, &view, PyBUF_SIMPLE)
        cdef size_t cap = MIN_REPLY + self.max_write + 4096
        cdef bytearray out = bytearray(cap)
        cdef Py_ssize_t n
        try:
            n = self.handle_raw(<const uint8_t *>view.buf, view.len, <uint8_t *><char *>out, cap)
        finally:
            PyBuffer_Release(&view)
        return bytes(out[:n]) if n > 0 else b""

    def handle_into(self, request, reply) -> int:
        """Serve one request, writing the reply into the writable buffer ``reply``; returns its length (0: none)."""
        cdef Py_buffer req_view, out_view
        PyObject_GetBuffer(request, &req_view, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(reply, &out_view, PyBUF_WRITABLE)
        except BaseException:
            PyBuffer_Release(&req_view)
            raise
        try:
            if out_view.len < MIN_REPLY:
                raise ValueError(f"reply buffer must hold at least {MIN_REPLY} bytes")
            return self.handle_raw(<const uint8_t *>req_view.buf, req_view.len, <uint8_t *>out_view.buf,
                                   out_view.len)
        finally:
            PyBuffer_Release(&out_view)
            PyBuffer_Release(&req_view)

    cdef Py_ssize_t handle_raw(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap) noexcept:
        """Serve one request: returns the reply length written at ``out`` (0: no reply is due).

        ``req`` must not change during the call (copy memory another party can write, such as a guest's, first).
        """
        return self._handle(req, reqlen, out, outcap, NULL, 0)

    cdef Py_ssize_t handle_data(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap,
                                iovec *data, int ndata) noexcept:
        """READ or WRITE with the data outside the request: ``req`` holds the header and the arguments only, the
        WRITE payload is read from ``data`` / READ data lands in ``data`` (guest pages: no copy). ``out`` gets the
        reply header (and the WRITE reply); the returned length counts the READ data placed in ``data`` too.
        ``data`` is modified (cut to size). Other opcodes are refused with EINVAL."""
        return self._handle(req, reqlen, out, outcap, data, ndata)

    cdef Py_ssize_t _handle(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap, iovec *data,
                            int ndata) noexcept:
        cdef fuse_in_header h
        cdef fuse_out_header *oh = <fuse_out_header *>out
        cdef Py_ssize_t r
        if outcap < OUT_HDR:
            return 0
        memset(oh, 0, OUT_HDR)
        if reqlen < IN_HDR:
            oh.len = OUT_HDR
            oh.error = -EINVAL
            return OUT_HDR
        memcpy(&h, req, IN_HDR)
        oh.unique = h.unique
        cdef size_t data_len = iov_total(data, ndata) if data != NULL else 0
        if data != NULL and h.opcode != FUSE_READ and h.opcode != FUSE_WRITE:
            r = -EINVAL
        elif h.len < IN_HDR or h.len > reqlen + (data_len if h.opcode == FUSE_WRITE else 0):
            r = -EINVAL
        elif outcap < MIN_REPLY:
            r = -ERANGE
        elif self.closed:
            r = -EIO
        else:
            try:
                r = self._dispatch(&h, req + IN_HDR, min(<size_t>h.len, reqlen) - IN_HDR, out + OUT_HDR,
                                   outcap - OUT_HDR, data, ndata)
            except BaseException:
                r = -EIO
            if r == -0x7fffffff:   # FORGET and BATCH_FORGET: the protocol wants no reply
                return 0
            if r == -EMFILE and not self.warned_fd_limit:
                self.warned_fd_limit = True
                _warn_fd_limit(len(self.inodes), len(self.handles))
        if r < 0:
            oh.len = OUT_HDR
            oh.error = <int>r
        else:
            oh.len = <uint32_t>(OUT_HDR + r)   # for READ through ``data``: the bytes placed there
        return oh.len

    # ---- dispatch -----------------------------------------------------------------------------------------

    cdef Py_ssize_t _dispatch(self, const fuse_in_header *h, const uint8_t *b, size_t n, uint8_t *o, size_t cap,
                              iovec *data, int ndata):
        cdef uint32_t op = h.opcode
        self.counts[op if op < 63 else 63] += 1
        if op == FUSE_INIT:
            return self._init(b, n, o)
        if not self.initialized:
            return -EIO
        if op == FUSE_FORGET:
            if n >= sizeof(fuse_forget_in):
                self._forget(h.nodeid, (<const fuse_forget_in *>b).nlookup)
            return -0x7fffffff
        if op == FUSE_BATCH_FORGET:
            self._batch_forget(b, n)
            return -0x7fffffff
        if op == FUSE_INTERRUPT:
            return -ENOSYS          # requests are short and synchronous: the kernel stops sending these
        if op == FUSE_DESTROY:
            self._reset()
            self.initialized = False
            return 0
        cdef _Inode ino = self.inodes.get(h.nodeid)
        if ino is None:
            return -EBADF
        if op == FUSE_LOOKUP:
            return self._lookup(ino, b, n, o)
        if op == FUSE_GETATTR:
            return self._getattr(ino, b, n, o)
        if op == FUSE_OPEN:
            return self._open(ino, b, n, o)
        if op == FUSE_READ:
            return self._read(ino, b, n, o, cap, data, ndata)
        if op == FUSE_WRITE:
            return -EROFS if self.readonly else self._write(b, n, o, data, ndata)
        if op == FUSE_RELEASE or op == FUSE_RELEASEDIR:
            return self._release(b, n)
        if op == FUSE_FLUSH:
            return -ENOSYS          # nothing to flush (no write-back cache here): the kernel stops sending these
        if op == FUSE_OPENDIR:
            return self._opendir(ino, o)
        if op == FUSE_READDIR:
            return self._readdir(ino, b, n, o, cap, False)
        if op == FUSE_READDIRPLUS:
            return self._readdir(ino, b, n, o, cap, True)
        if op == FUSE_STATFS:
            return self._statfs(ino, o)
        if op == FUSE_READLINK:
            return self._readlink(ino, o, cap)
        if op == FUSE_ACCESS:
            return self._access(ino, b, n)
        if op == FUSE_FSYNC or op == FUSE_FSYNCDIR:
            return self._fsync(ino, b, n)
        if op == FUSE_LSEEK:
            return self._lseek(ino, b, n, o)
        if op in (FUSE_GETXATTR, FUSE_LISTXATTR, FUSE_SETXATTR, FUSE_REMOVEXATTR):
            if self.readonly and (op == FUSE_SETXATTR or op == FUSE_REMOVEXATTR):
                return -EROFS
            return -ENOSYS          # no xattrs: the kernel stops asking after the first ENOSYS
        if op in (FUSE_SETATTR, FUSE_SYMLINK, FUSE_MKNOD, FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME,
                  FUSE_RENAME2, FUSE_LINK, FUSE_CREATE, FUSE_FALLOCATE, FUSE_COPY_FILE_RANGE):
            if self.readonly:
                return -EROFS
            if op == FUSE_SETATTR:
                return self._setattr(ino, b, n, o)
            if op == FUSE_CREATE:
                return self._create(ino, b, n, o, h.uid, h.gid)
            if op == FUSE_MKDIR:
                return self._mkdir(ino, b, n, o, h.uid, h.gid)
            if op == FUSE_MKNOD:
                return self._mknod(ino, b, n, o, h.uid, h.gid)
            if op == FUSE_SYMLINK:
                return self._symlink(ino, b, n, o, h.uid, h.gid)
            if op == FUSE_LINK:
                return self._link(ino, b, n, o)
            if op == FUSE_UNLINK:
                return self._unlink(ino, b, n, 0)
            if op == FUSE_RMDIR:
                return self._unlink(ino, b, n, AT_REMOVEDIR)
            if op == FUSE_RENAME:
                if n < sizeof(fuse_rename_in):
                    return -EINVAL
                return self._rename(ino, (<const fuse_rename_in *>b).newdir, 0, b + sizeof(fuse_rename_in),
                                    n - sizeof(fuse_rename_in))
            if op == FUSE_RENAME2:
                if n < sizeof(fuse_rename2_in):
                    return -EINVAL
                return self._rename(ino, (<const fuse_rename2_in *>b).newdir, (<const fuse_rename2_in *>b).flags,
                                    b + sizeof(fuse_rename2_in), n - sizeof(fuse_rename2_in))
            if op == FUSE_FALLOCATE:
                return self._fallocate(b, n)
            if op == FUSE_COPY_FILE_RANGE:
                return self._copy_file_range(b, n, o)
        return -ENOSYS

    # ---- session ------------------------------------------------------------------------------------------

    cdef Py_ssize_t _init(self, const uint8_t *b, size_t n, uint8_t *o):
        cdef fuse_init_in i
        cdef fuse_init_out *r = <fuse_init_out *>o
        if n < 16:
            return -EINVAL
        memcpy(&i, b, 16)
        memset(r, 0, sizeof(fuse_init_out))
        r.major = FUSE_KERNEL_VERSION
        r.minor = FUSE_KERNEL_MINOR_VERSION
        if i.major > FUSE_KERNEL_VERSION:
            return 8                     # the kernel retries with our major
        if i.major < FUSE_KERNEL_VERSION or i.minor < OUR_MINOR_MIN:
            return -EPROTO
        if i.minor < r.minor:
            r.minor = i.minor
        r.max_readahead = i.max_readahead
        r.flags = i.flags & (FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS |
                             FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS |
                             FUSE_AUTO_INVAL_DATA)
        r.max_background = 64
        r.congestion_threshold = 48
        r.max_write = self.max_write
        r.time_gran = 1
        r.max_pages = <uint16_t>((self.max_write + 4095) // 4096)
        self.initialized = True
        return sizeof(fuse_init_out)

    cdef void _reset(self):
        """DESTROY: forget every handle and inode but the root."""
        self.handles = {}
        root = self.inodes[FUSE_ROOT_ID]
        self.inodes = {FUSE_ROOT_ID: root}
        self.by_key = {((<_Inode>root).dev, (<_Inode>root).ino): FUSE_ROOT_ID}

    cdef void _forget(self, uint64_t nodeid, uint64_t count):
        cdef _Inode ino
        if nodeid == FUSE_ROOT_ID:
            return
        ino = self.inodes.get(nodeid)
        if ino is None:
            return
        ino.nlookup = ino.nlookup - count if ino.nlookup > count else 0
        if ino.nlookup == 0:
            del self.inodes[nodeid]
            self.by_key.pop((ino.dev, ino.ino), None)

    cdef void _batch_forget(self, const uint8_t *b, size_t n):
        cdef uint32_t count, k
        cdef const fuse_forget_one *one
        if n < 8:
            return
        count = (<const fuse_batch_forget_in *>b).count
        if count > (n - 8) // sizeof(fuse_forget_one):
            count = <uint32_t>((n - 8) // sizeof(fuse_forget_one))   # never past the body
        one = <const fuse_forget_one *>(b + 8)
        for k in range(count):
            self._forget(one[k].nodeid, one[k].nlookup)

    # ---- inodes -------------------------------------------------------------------------------------------

    cdef uint64_t _intern(self, int fd, const struct_stat *st):
        """Adopt ``fd`` (O_PATH) as an inode, or count one more lookup of a known one (closing ``fd``)."""
        cdef _Inode ino
        key = (st.st_dev, st.st_ino)
        nodeid = self.by_key.get(key)
        if nodeid is not None:
            ino = self.inodes[nodeid]
            ino.nlookup += 1
            close(fd)
            return nodeid
        ino = _Inode()
        ino.fd = fd
        ino.dev = st.st_dev
        ino.ino = st.st_ino
        ino.kind = st.st_mode & S_IFMT
        ino.nlookup = 1
        nodeid = self.next_nodeid
        self.next_nodeid += 1
        self.inodes[nodeid] = ino
        self.by_key[key] = nodeid
        return nodeid

    cdef void _fill_entry(self, fuse_entry_out *e, uint64_t nodeid, const struct_stat *st) noexcept:
        memset(e, 0, sizeof(fuse_entry_out))
        e.nodeid = nodeid
        e.entry_valid = self.t_sec
        e.attr_valid = self.t_sec
        e.entry_valid_nsec = self.t_nsec
        e.attr_valid_nsec = self.t_nsec
        fill_attr(&e.attr, st)

    cdef Py_ssize_t _entry_at(self, _Inode directory, const char *name, fuse_entry_out *e):
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
        self._fill_entry(e, self._intern(fd, &st), &st)
        return sizeof(fuse_entry_out)

    cdef Py_ssize_t _entry_from_open_fd(self, int fd, fuse_entry_out *e):
        """An inode for the file behind an open descriptor, reached through its magic link (no path walk)."""
        cdef struct_stat st
        cdef char num[24]
        snprintf(num, 24, "%d", fd)
        cdef int pfd = openat(self.proc_fd, num, O_PATH | O_CLOEXEC)
        if pfd < 0:
            return neg_errno()
        if fstat(pfd, &st) < 0:
            r = neg_errno()
            close(pfd)
            return r
        self._fill_entry(e, self._intern(pfd, &st), &st)
        return sizeof(fuse_entry_out)

    cdef int _reopen(self, _Inode ino, int flags):
        """A real descriptor for a regular file or directory inode (never a symlink: those are not opened)."""
        cdef char num[24]
        if ino.kind != S_IFREG and ino.kind != S_IFDIR:
            cerrno.errno = ELOOP if ino.kind == S_IFLNK else EACCES
            return -1
        snprintf(num, 24, "%d", ino.fd)
        return openat(self.proc_fd, num, (flags & ~(O_CREAT | O_EXCL)) | O_CLOEXEC)

    cdef void _become(self, uint32_t uid, uint32_t gid) noexcept:
        """Create as the caller (owner and group as on a local file system), keeping the server's power to
        bypass permission bits: the client already checked them (default_permissions), the host must not
        refuse for lack of supplementary groups. Thread-local (fsuid/fsgid and capabilities are per thread)."""
        cdef cap_header hdr
        cdef cap_data data[2]
        if not self.switch_creds or (uid == 0 and gid == 0):
            return
        setfsgid(gid)
        setfsuid(uid)
        if uid != 0:   # a non-zero fsuid drops the file capabilities from the effective set: take two back
            hdr.version = _LINUX_CAPABILITY_VERSION_3
            hdr.pid = 0
            if syscall(SYS_capget, &hdr, data) == 0:
                data[0].effective |= (1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)
                syscall(SYS_capset, &hdr, data)

    cdef void _unbecome(self, uint32_t uid, uint32_t gid) noexcept:
        if not self.switch_creds or (uid == 0 and gid == 0):
            return
        setfsuid(0)    # back to fsuid 0: the permitted capabilities return to the effective set
        setfsgid(0)

    cdef int64_t _need(self, const struct_stat *st, int64_t off, int64_t length) noexcept:
        """The most a write of ``length`` at ``off`` can allocate in the file ``st``: nothing when it overwrites a
        file without holes, else its new blocks and one for the file's extent tree."""
        cdef int64_t size = st.st_size
        cdef bint holes = <int64_t>st.st_blocks * 512 < round_up(size)
        if length <= 0 or (off + length <= size and not holes):
            return 0
        return round_up(off + length) - round_down(off if holes or off > size else size) + BLOCK

    cdef int64_t _fit(self, const struct_stat *st, int64_t off, int64_t length) noexcept:
        """How much of a write that extends the file fits in what is left of the quota (0: none)."""
        cdef int64_t room = self.account.available - 2 * BLOCK
        cdef int64_t start = off if off > st.st_size else st.st_size
        if room <= 0 or off + length <= st.st_size:
            return 0
        cdef int64_t end = round_down(start) + round_down(room)
        return min(length, end - off) if end > off else 0

    cdef int64_t _take(self, const struct_stat *st, int64_t off, int64_t *length) noexcept:
        """Reserve for a write of ``length`` at ``off`` (shortened to what fits); -1: nothing fits."""
        cdef int64_t need = self._need(st, off, length[0])
        if self.account.reserve(need):
            return need
        length[0] = self._fit(st, off, length[0])
        need = self._need(st, off, length[0])
        if length[0] <= 0 or not self.account.reserve(need):
            return -1
        return need

    cdef void _settle(self, int64_t reserved, int64_t before, int fd) noexcept:
        """Charge what the file on ``fd`` really gained since it had ``before`` bytes of blocks (or freed)."""
        cdef struct_stat st
        if self.account is None:
            return
        if fstat(fd, &st) < 0:
            return                                       # unknown: keep the reservation
        self.account.settle(reserved, <int64_t>st.st_blocks * 512 - before)

    cdef bint _charge_inode(self, int64_t reserved, int dirfd, const char *name) noexcept:
        """Settle a new inode's reservation with what it costs (nothing when it was not made)."""
        cdef struct_stat st
        if self.account is None:
            return True
        if name == NULL or fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0:
            self.account.settle(reserved, 0)
        else:
            self.account.settle(reserved, inode_cost(&st))
        return True

    # ---- attributes ---------------------------------------------------------------------------------------

    cdef Py_ssize_t _lookup(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o):
        cdef size_t used
        cdef int r = check_name(b, n, &used)
        if r < 0:
            return r
        cdef Py_ssize_t found = self._entry_at(parent, <const char *>b, <fuse_entry_out *>o)
        cdef fuse_entry_out *e = <fuse_entry_out *>o
        if found == -ENOENT and (self.neg_sec or self.neg_nsec):  # nodeid 0: the kernel keeps a negative dentry
            memset(e, 0, sizeof(fuse_entry_out))
            e.entry_valid = self.neg_sec
            e.entry_valid_nsec = self.neg_nsec
            return sizeof(fuse_entry_out)
        return found

    cdef Py_ssize_t _getattr(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o):
        cdef struct_stat st
        cdef fuse_attr_out *a = <fuse_attr_out *>o
        cdef _Handle hd = None
        cdef int rc
        if n >= sizeof(fuse_getattr_in) and (<const fuse_getattr_in *>b).getattr_flags & FUSE_GETATTR_FH:
            hd = self.handles.get((<const fuse_getattr_in *>b).fh)
        rc = fstat(hd.fd, &st) if hd is not None else fstatat(ino.fd, "", &st, STAT_FLAGS)
        if rc < 0:
            return neg_errno()
        memset(a, 0, sizeof(fuse_attr_out))
        a.attr_valid = self.t_sec
        a.attr_valid_nsec = self.t_nsec
        fill_attr(&a.attr, &st)
        return sizeof(fuse_attr_out)

    cdef Py_ssize_t _setattr(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o):
        cdef fuse_setattr_in s
        cdef struct_stat st
        cdef _Handle hd = None
        cdef char num[24]
        cdef timespec ts[2]
        cdef int fd, rc
        cdef int64_t growth
        if n < sizeof(fuse_setattr_in):
            return -EINVAL
        memcpy(&s, b, sizeof(fuse_setattr_in))
        if s.valid & FATTR_FH:
            hd = self.handles.get(s.fh)
        snprintf(num, 24, "%d", ino.fd)
        if s.valid & FATTR_MODE:
            if ino.kind == S_IFLNK:
                return -EOPNOTSUPP
            rc = fchmod(hd.fd, s.mode & MODE_BITS) if hd is not None else fchmodat(self.proc_fd, num,
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
            fd = hd.fd if hd is not None and hd.writable else self._reopen(ino, O_WRONLY)
            if fd < 0:
                return neg_errno()
            rc = fstat(fd, &st)                          # truncating up allocates nothing; down frees blocks
            if rc == 0:
                with nogil:
                    rc = ftruncate(fd, s.size)
            err = neg_errno()
            if rc == 0:
                self._settle(0, <int64_t>st.st_blocks * 512, fd)
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
                rc = utimensat(self.proc_fd, num, ts, 0)
            if rc < 0:
                return neg_errno()
        return self._getattr(ino, NULL, 0, o)

    cdef Py_ssize_t _statfs(self, _Inode ino, uint8_t *o):
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
        if self.account is not None:
            frsize = sv.f_frsize if sv.f_frsize else 4096
            r.st.blocks = <uint64_t>self.account.limit // frsize
            free_blocks = <uint64_t>self.account.available // frsize
            r.st.bfree = min(free_blocks, sv.f_bfree)
            r.st.bavail = min(free_blocks, sv.f_bavail)
        return sizeof(fuse_statfs_out)

    cdef Py_ssize_t _readlink(self, _Inode ino, uint8_t *o, size_t cap):
        cdef ssize_t got = 0
        if ino.kind != S_IFLNK:
            return -EINVAL
        got = readlinkat(ino.fd, "", <char *>o, cap)
        if got < 0:
            return neg_errno()
        return got

    cdef Py_ssize_t _access(self, _Inode ino, const uint8_t *b, size_t n):
        cdef char num[24]
        if n < sizeof(fuse_access_in):
            return -EINVAL
        cdef uint32_t mask = (<const fuse_access_in *>b).mask
        if self.readonly and (mask & W_OK):
            return -EROFS
        if ino.kind == S_IFLNK:
            return 0
        snprintf(num, 24, "%d", ino.fd)
        if faccessat(self.proc_fd, num, mask, 0) < 0:
            return neg_errno()
        return 0

    # ---- files and directories ----------------------------------------------------------------------------

    cdef uint64_t _new_handle(self, int fd, _Inode ino, bint is_dir, bint writable):
        cdef _Handle hd = _Handle()
        hd.fd = fd
        hd.inode = ino
        hd.is_dir = is_dir
        hd.writable = writable
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = hd
        return fh

    cdef Py_ssize_t _open(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o):
        cdef struct_stat st
        cdef fuse_open_out *r = <fuse_open_out *>o
        if n < 4:
            return -EINVAL
        cdef int flags = (<const fuse_open_in *>b).flags
        cdef int acc = flags & O_ACCMODE
        if ino.kind == S_IFDIR:
            return -EISDIR
        if self.readonly and (acc != O_RDONLY or flags & O_TRUNC):
            return -EROFS
        if self.no_open:
            return -ENOSYS          # from now on the kernel opens without asking; reads name the inode (``_file``)
        cdef int64_t before = 0
        if flags & O_TRUNC and self.account is not None and fstatat(ino.fd, "", &st, STAT_FLAGS) == 0:
            before = <int64_t>st.st_blocks * 512
        cdef int fd = self._reopen(ino, flags & PASS_FLAGS)
        if fd < 0:
            return neg_errno()
        if flags & O_TRUNC:
            self._settle(0, before, fd)
        memset(r, 0, sizeof(fuse_open_out))
        r.open_flags = self.open_flags
        r.fh = self._new_handle(fd, ino, False, acc != O_RDONLY)
        return sizeof(fuse_open_out)

    cdef Py_ssize_t _opendir(self, _Inode ino, uint8_t *o):
        cdef fuse_open_out *r = <fuse_open_out *>o
        if ino.kind != S_IFDIR:
            return -ENOTDIR
        if self.no_open:
            return -ENOSYS          # ... and caches the listings it reads (FOPEN_CACHE_DIR, its no-open default)
        cdef int fd = self._reopen(ino, O_RDONLY | O_DIRECTORY)
        if fd < 0:
            return neg_errno()
        memset(r, 0, sizeof(fuse_open_out))
        r.fh = self._new_handle(fd, ino, True, False)
        return sizeof(fuse_open_out)

    cdef Py_ssize_t _release(self, const uint8_t *b, size_t n):
        if n < 8:
            return -EINVAL
        self.handles.pop((<const fuse_release_in *>b).fh, None)   # the handle closes its descriptor
        return 0

    cdef _Handle _file(self, _Inode ino, uint64_t fh, bint want_dir):
        """The open file ``fh`` names; with no-open, where the kernel sends ``fh`` 0, a descriptor of ``ino`` for
        this request only (a handle in no table: it closes when the request is done). None: no such file, and
        ``_no_file`` says why."""
        cdef _Handle hd
        cdef int fd
        if fh == 0 and self.no_open and ino is not None:
            if (ino.kind == S_IFDIR) != want_dir:
                cerrno.errno = EISDIR if ino.kind == S_IFDIR else ENOTDIR
                return None
            fd = self._reopen(ino, O_RDONLY | (O_DIRECTORY if want_dir else 0))
            if fd < 0:
                return None         # errno from the reopen: EACCES, EMFILE, ... (the open the guest never sent)
            hd = _Handle()
            hd.fd = fd
            hd.inode = ino
            hd.is_dir = want_dir
            return hd
        hd = self.handles.get(fh)
        if hd is None or hd.is_dir != want_dir:
            cerrno.errno = EBADF
            return None
        return hd

    cdef Py_ssize_t _no_file(self) noexcept:
        """Why ``_file`` found none (errno as it left it; EMFILE is reported by ``_handle``)."""
        return -cerrno.errno if cerrno.errno else -EBADF

    cdef Py_ssize_t _read(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap, iovec *data, int ndata):
        cdef fuse_read_in r
        cdef ssize_t got = 0
        cdef size_t want, done = 0
        cdef iovec single
        cdef int first = 0
        if n < 24:
            return -EINVAL
        memcpy(&r, b, 24)
        cdef _Handle hd = self._file(ino, r.fh, False)
        if hd is None:
            return self._no_file()
        if r.offset > <uint64_t>INT64_MAX:
            return -EINVAL
        if data == NULL:
            single.iov_base = o
            single.iov_len = cap
            data = &single
            ndata = 1
        want = min(<size_t>r.size, iov_total(data, ndata))
        ndata = iov_trim(data, ndata, want)
        cdef int fd = hd.fd
        cdef int64_t off = r.offset
        with nogil:
            while done < want:
                got = preadv(fd, data + first, ndata - first, off + done)
                if got <= 0:
                    break
                done += got
                first += iov_skip(data + first, ndata - first, got)
        if done == 0 and got < 0:
            return neg_errno()
        return done

    cdef Py_ssize_t _write(self, const uint8_t *b, size_t n, uint8_t *o, iovec *data, int ndata):
        cdef fuse_write_in w
        cdef struct_stat st
        cdef ssize_t put = 0
        cdef size_t size, done = 0
        cdef int64_t growth, end, real
        cdef iovec single
        cdef int first = 0
        if n < sizeof(fuse_write_in):
            return -EINVAL
        memcpy(&w, b, sizeof(fuse_write_in))
        size = w.size
        if data == NULL:
            single.iov_base = <void *>(b + sizeof(fuse_write_in))
            single.iov_len = n - sizeof(fuse_write_in)
            data = &single
            ndata = 1
        if size > iov_total(data, ndata):
            return -EINVAL                               # claims more data than the request carries
        if w.offset > <uint64_t>(INT64_MAX - size):
            return -EFBIG
        cdef _Handle hd = self._file(None, w.fh, False)
        if hd is None:
            return -EBADF
        if not hd.writable:
            return -EBADF
        cdef int fd = hd.fd
        cdef int64_t off = w.offset
        cdef int64_t reserved = 0, length = size
        if self.account is not None and size:
            if fstat(fd, &st) < 0:
                return neg_errno()
            reserved = self._take(&st, off, &length)     # only part of it may fit: written up to the limit
            if reserved < 0:
                return -ENOSPC
            size = <size_t>length
        ndata = iov_trim(data, ndata, size)
        with nogil:
            while done < size:
                put = pwritev(fd, data + first, ndata - first, off + done)
                if put <= 0:
                    break
                done += put
                first += iov_skip(data + first, ndata - first, put)
        if self.account is not None and size:
            self._settle(reserved, <int64_t>st.st_blocks * 512, fd)
        if done == 0 and put < 0:
            return neg_errno()
        memset(o, 0, sizeof(fuse_write_out))
        (<fuse_write_out *>o).size = <uint32_t>done
        return sizeof(fuse_write_out)

    cdef Py_ssize_t _fsync(self, _Inode ino, const uint8_t *b, size_t n):
        cdef int rc
        if n < sizeof(fuse_fsync_in):
            return -EINVAL
        if (<const fuse_fsync_in *>b).fh == 0 and self.no_open:
            return 0                # opened without asking: read-only, nothing of the guest's to flush
        cdef _Handle hd = self.handles.get((<const fuse_fsync_in *>b).fh)
        if hd is None:
            return -EBADF
        cdef int fd = hd.fd
        cdef bint data_only = (<const fuse_fsync_in *>b).fsync_flags & 1
        with nogil:
            rc = fdatasync(fd) if data_only else fsync(fd)
        return neg_errno() if rc < 0 else 0

    cdef Py_ssize_t _lseek(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o):
        if n < sizeof(fuse_lseek_in):
            return -EINVAL
        cdef fuse_lseek_in s
        memcpy(&s, b, sizeof(fuse_lseek_in))
        cdef _Handle hd = self._file(ino, s.fh, False)
        if hd is None:
            return self._no_file()
        if s.offset > <uint64_t>INT64_MAX:
            return -EINVAL
        cdef int64_t pos = lseek(hd.fd, s.offset, s.whence)
        if pos < 0:
            return neg_errno()
        (<fuse_lseek_out *>o).offset = pos
        return sizeof(fuse_lseek_out)

    cdef Py_ssize_t _fallocate(self, const uint8_t *b, size_t n):
        cdef fuse_fallocate_in f
        cdef struct_stat st
        cdef int rc
        cdef int64_t growth = 0
        if n < sizeof(fuse_fallocate_in):
            return -EINVAL
        memcpy(&f, b, sizeof(fuse_fallocate_in))
        cdef _Handle hd = self._file(None, f.fh, False)
        if hd is None or not hd.writable:
            return -EBADF
        if f.offset > <uint64_t>INT64_MAX or f.length > <uint64_t>INT64_MAX - f.offset:
            return -EFBIG
        # Only what the kernel's FUSE client sends; anything else (COLLAPSE, INSERT, UNSHARE...) is refused.
        if f.mode not in (0, FALLOC_FL_KEEP_SIZE, FALLOC_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_ZERO_RANGE,
                          FALLOC_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):
            return -EOPNOTSUPP
        if self.account is not None:
            if fstat(hd.fd, &st) < 0:
                return neg_errno()
            if not f.mode & FALLOC_PUNCH_HOLE:
                growth = round_up(<int64_t>f.length) + BLOCK
                if not self.account.reserve(growth):
                    return -ENOSPC
        cdef int fd = hd.fd
        with nogil:
            rc = fallocate(fd, f.mode, f.offset, f.length)
        err = neg_errno()
        if self.account is not None:
            self._settle(growth, <int64_t>st.st_blocks * 512, fd)
        return err if rc < 0 else 0

    cdef Py_ssize_t _copy_file_range(self, const uint8_t *b, size_t n, uint8_t *o):
        cdef fuse_copy_file_range_in c
        cdef struct_stat st
        cdef ssize_t got = 0
        cdef int64_t growth = 0, real, off_in, off_out
        cdef size_t length
        if n < sizeof(fuse_copy_file_range_in):
            return -EINVAL
        memcpy(&c, b, sizeof(fuse_copy_file_range_in))
        if c.flags != 0:
            return -EINVAL
        cdef _Handle src = self._file(None, c.fh_in, False)
        cdef _Handle dst = self._file(None, c.fh_out, False)
        if src is None or dst is None or not dst.writable:
            return -EBADF
        if c.off_in > <uint64_t>INT64_MAX or c.off_out > <uint64_t>INT64_MAX:
            return -EINVAL
        length = min(c.len, <uint64_t>(1 << 30))
        if c.off_out > <uint64_t>INT64_MAX - length:
            return -EFBIG
        off_in = c.off_in
        off_out = c.off_out
        cdef int64_t want = length
        if self.account is not None and length:
            if fstat(dst.fd, &st) < 0:
                return neg_errno()
            growth = self._take(&st, off_out, &want)
            if growth < 0:
                return -ENOSPC
            length = <size_t>want
        cdef int fd_in = src.fd, fd_out = dst.fd
        with nogil:
            got = copy_file_range(fd_in, <off_t *>&off_in, fd_out, <off_t *>&off_out, length, 0)
        err = neg_errno()
        if self.account is not None and length:
            self._settle(growth, <int64_t>st.st_blocks * 512, fd_out)
        if got < 0:
            return err
        memset(o, 0, sizeof(fuse_write_out))
        (<fuse_write_out *>o).size = <uint32_t>got
        return sizeof(fuse_write_out)

    cdef Py_ssize_t _readdir(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap, bint plus):
        cdef fuse_read_in r
        cdef ssize_t got = 0
        cdef size_t pos = 0, at, need, namelen, bufsize
        cdef dirent64 *d
        cdef fuse_dirent *fd_ent
        cdef fuse_direntplus *fp
        cdef char *buf
        cdef Py_ssize_t rc
        if n < 24:
            return -EINVAL
        memcpy(&r, b, 24)
        cdef _Handle hd = self._file(ino, r.fh, True)
        if hd is None:
            return self._no_file()
        if r.offset > <uint64_t>INT64_MAX:
            return -EINVAL
        cap = min(cap, <size_t>r.size)
        cdef int dirfd = hd.fd
        if lseek(hd.fd, r.offset, SEEK_SET) < 0:
            return neg_errno()
        bufsize = 32768
        buf = <char *>malloc(bufsize)
        if buf == NULL:
            return -ENOSPC
        try:
            while True:
                with nogil:
                    got = getdents64(dirfd, buf, bufsize)
                if got < 0:
                    return neg_errno() if pos == 0 else pos
                if got == 0:
                    return pos
                at = 0
                while at < <size_t>got:
                    d = <dirent64 *>(buf + at)
                    at += d.d_reclen
                    namelen = <size_t>(<char *>memchr(d.d_name, 0, NAME_MAX + 1) - d.d_name)
                    if plus:
                        need = (sizeof(fuse_direntplus) + namelen + 7) & ~(<size_t>7)
                    else:
                        need = (sizeof(fuse_dirent) + namelen + 7) & ~(<size_t>7)
                    if pos + need > cap:
                        return pos                       # the next READDIR restarts at this entry's offset
                    if plus:
                        fp = <fuse_direntplus *>(o + pos)
                        memset(fp, 0, need)
                        fd_ent = &fp.dirent
                        if not (d.d_name[0] == 46 and (namelen == 1 or (namelen == 2 and d.d_name[1] == 46))):
                            rc = self._entry_at(hd.inode, d.d_name, &fp.entry_out)
                            if rc < 0:
                                memset(&fp.entry_out, 0, sizeof(fuse_entry_out))
                    else:
                        fd_ent = <fuse_dirent *>(o + pos)
                        memset(fd_ent, 0, need)
                    fd_ent.ino = d.d_ino
                    fd_ent.off = d.d_off
                    fd_ent.namelen = <uint32_t>namelen
                    fd_ent.type = d.d_type
                    memcpy(<char *>fd_ent + sizeof(fuse_dirent), d.d_name, namelen)
                    pos += need
        finally:
            free(buf)

    # ---- namespace changes --------------------------------------------------------------------------------

    cdef Py_ssize_t _create(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
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
        if self.account is not None:
            if fstatat(parent.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0:
                before = <int64_t>st.st_blocks * 512
            else:
                reserved = INODE_COST
                if not self.account.reserve(reserved):
                    return -ENOSPC
        self._become(uid, gid)
        fd = openat(parent.fd, name, (c.flags & (PASS_FLAGS | O_EXCL)) | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                    c.mode & MODE_BITS)
        rc = neg_errno()
        self._unbecome(uid, gid)
        if self.account is not None:
            if fd < 0:
                self.account.settle(reserved, 0)
            elif before < 0:
                self._charge_inode(reserved, parent.fd, name)
            else:
                self._settle(0, before, fd)
        if fd < 0:
            return rc
        cdef fuse_entry_out entry            # built privately: the reply buffer may be shared with a guest
        er = self._entry_from_open_fd(fd, &entry)
        if er < 0:
            close(fd)
            return er
        memcpy(o, &entry, sizeof(fuse_entry_out))
        cdef fuse_open_out *r = <fuse_open_out *>(o + sizeof(fuse_entry_out))
        memset(r, 0, sizeof(fuse_open_out))
        r.open_flags = self.open_flags
        ino = self.inodes[entry.nodeid]
        r.fh = self._new_handle(fd, ino, False, (c.flags & O_ACCMODE) != O_RDONLY)
        return sizeof(fuse_entry_out) + sizeof(fuse_open_out)

    cdef Py_ssize_t _mkdir(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid):
        cdef size_t used
        if n < sizeof(fuse_mkdir_in):
            return -EINVAL
        cdef int rc = check_name(b + sizeof(fuse_mkdir_in), n - sizeof(fuse_mkdir_in), &used)
        if rc < 0:
            return rc
        cdef const char *name = <const char *>(b + sizeof(fuse_mkdir_in))
        cdef int64_t reserved = INODE_COST + BLOCK
        if self.account is not None and not self.account.reserve(reserved):
            return -ENOSPC
        self._become(uid, gid)
        rc = mkdirat(parent.fd, name, (<const fuse_mkdir_in *>b).mode & MODE_BITS)
        err = neg_errno()
        self._unbecome(uid, gid)
        self._charge_inode(reserved, parent.fd, name if rc == 0 else NULL)
        if rc < 0:
            return err
        return self._entry_at(parent, name, <fuse_entry_out *>o)

    cdef Py_ssize_t _mknod(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
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
        if self.account is not None and not self.account.reserve(INODE_COST):
            return -ENOSPC
        self._become(uid, gid)
        rc = mknodat(parent.fd, name, (mode & S_IFMT) | (mode & MODE_BITS), 0)
        err = neg_errno()
        self._unbecome(uid, gid)
        self._charge_inode(INODE_COST, parent.fd, name if rc == 0 else NULL)
        if rc < 0:
            return err
        return self._entry_at(parent, name, <fuse_entry_out *>o)

    cdef Py_ssize_t _symlink(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
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
        if self.account is not None and not self.account.reserve(reserved):
            return -ENOSPC
        self._become(uid, gid)
        rc = symlinkat(<const char *>target, parent.fd, <const char *>b)
        err = neg_errno()
        self._unbecome(uid, gid)
        self._charge_inode(reserved, parent.fd, <const char *>b if rc == 0 else NULL)
        if rc < 0:
            return err
        return self._entry_at(parent, <const char *>b, <fuse_entry_out *>o)

    cdef Py_ssize_t _link(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o):
        cdef size_t used
        cdef char num[24]
        if n < sizeof(fuse_link_in):
            return -EINVAL
        cdef int rc = check_name(b + sizeof(fuse_link_in), n - sizeof(fuse_link_in), &used)
        if rc < 0:
            return rc
        cdef _Inode src = self.inodes.get((<const fuse_link_in *>b).oldnodeid)
        if src is None:
            return -EBADF                                # only inodes already reached through the share
        if src.kind == S_IFDIR:
            return -EPERM
        cdef const char *name = <const char *>(b + sizeof(fuse_link_in))
        if linkat(src.fd, "", parent.fd, name, AT_EMPTY_PATH) < 0:
            if errno != ENOENT or src.kind == S_IFLNK:
                return neg_errno()
            snprintf(num, 24, "%d", src.fd)              # without CAP_DAC_READ_SEARCH: through the magic link
            if linkat(self.proc_fd, num, parent.fd, name, AT_SYMLINK_FOLLOW) < 0:
                return neg_errno()
        return self._entry_at(parent, name, <fuse_entry_out *>o)

    cdef int64_t _released_bytes(self, int dirfd, const char *name):
        """What a successful unlink/rmdir/overwrite of ``name`` gives back to the quota (its last link)."""
        cdef struct_stat st
        if self.account is None or fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0:
            return 0
        if (st.st_mode & S_IFMT) == S_IFDIR or st.st_nlink == 1:
            return inode_cost(&st)
        return 0

    cdef Py_ssize_t _unlink(self, _Inode parent, const uint8_t *b, size_t n, int flags):
        cdef size_t used
        cdef int rc = check_name(b, n, &used)
        if rc < 0:
            return rc
        cdef int64_t freed = self._released_bytes(parent.fd, <const char *>b)
        if unlinkat(parent.fd, <const char *>b, flags) < 0:
            return neg_errno()
        if freed:
            self.account.settle(0, -freed)
        return 0

    cdef Py_ssize_t _rename(self, _Inode parent, uint64_t newdir, uint32_t flags, const uint8_t *b, size_t n):
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
        cdef _Inode dst = self.inodes.get(newdir)
        if dst is None:
            return -EBADF
        cdef const char *newname = <const char *>(b + used_old)
        if flags == 0:
            freed = self._released_bytes(dst.fd, newname)
        if renameat2(parent.fd, <const char *>b, dst.fd, newname, flags) < 0:
            return neg_errno()
        if freed:
            self.account.settle(0, -freed)
        return 0
