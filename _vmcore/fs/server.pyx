# cython: language_level=3
"""The FUSE server core: one request in (header + body bytes), one reply out, transport-agnostic.

Confinement rules, enforced by this server (this module and the handler modules below) for every transport:

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

This module keeps ``FuseServer``: its setup, the session (INIT, DESTROY, FORGET) and the dispatch of every other
opcode to its handler. The rest, each in its own module of this package: ``state`` (what the handlers share),
``inodes`` and ``handles`` (the two tables), ``creds`` (creating as the caller), ``charge`` (quota arithmetic),
``wire`` (inline helpers), ``resources`` (what the process must hold of ``/proc``), and the handlers by kind:
``attrs``, ``files``, ``dirs``, ``namespace``.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.errno cimport EINVAL, ENOSYS, EBADF, EROFS, EIO, ERANGE, EPROTO, EMFILE
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from posix.uio cimport iovec

from _vmcore.fs.abi cimport *
from _vmcore.fs.attrs cimport op_lookup, op_getattr, op_setattr, op_access, op_readlink, op_statfs
from _vmcore.fs.dirs cimport op_opendir, op_readdir
from _vmcore.fs.files cimport op_open, op_read, op_write, op_fsync, op_lseek, op_fallocate, op_copy_file_range
from _vmcore.fs.handles cimport op_release
from _vmcore.fs.inodes cimport Inode, forget, batch_forget
from _vmcore.fs.namespace cimport op_create, op_mkdir, op_mknod, op_symlink, op_link, op_unlink, op_rename
from _vmcore.fs.quota cimport QuotaAccount
from _vmcore.fs.state cimport ServerState
from _vmcore.fs.wire cimport iov_total

import os

from _vmcore.fs.resources import proc_self_fd, raise_fd_limit, warn_fd_limit
from _vmcore.fs.resources import hold_proc_access  # imported from here by its callers

cdef enum:
    IN_HDR = 40
    OUT_HDR = 16
    MIN_REPLY = 16 + 256        # every fixed-size reply fits in this
    OUR_MINOR_MIN = 31


cdef class FuseServer(ServerState):
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
        raise_fd_limit()
        self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.proc_fd = proc_self_fd()
        st = os.fstat(self.root_fd)
        root_inode = Inode()
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
                warn_fd_limit(len(self.inodes), len(self.handles))
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
                forget(self, h.nodeid, (<const fuse_forget_in *>b).nlookup)
            return -0x7fffffff
        if op == FUSE_BATCH_FORGET:
            batch_forget(self, b, n)
            return -0x7fffffff
        if op == FUSE_INTERRUPT:
            return -ENOSYS          # requests are short and synchronous: the kernel stops sending these
        if op == FUSE_DESTROY:
            self._reset()
            self.initialized = False
            return 0
        cdef Inode ino = self.inodes.get(h.nodeid)
        if ino is None:
            return -EBADF
        if op == FUSE_LOOKUP:
            return op_lookup(self, ino, b, n, o)
        if op == FUSE_GETATTR:
            return op_getattr(self, ino, b, n, o)
        if op == FUSE_OPEN:
            return op_open(self, ino, b, n, o)
        if op == FUSE_READ:
            return op_read(self, ino, b, n, o, cap, data, ndata)
        if op == FUSE_WRITE:
            return -EROFS if self.readonly else op_write(self, b, n, o, data, ndata)
        if op == FUSE_RELEASE or op == FUSE_RELEASEDIR:
            return op_release(self, b, n)
        if op == FUSE_FLUSH:
            return -ENOSYS          # nothing to flush (no write-back cache here): the kernel stops sending these
        if op == FUSE_OPENDIR:
            return op_opendir(self, ino, o)
        if op == FUSE_READDIR:
            return op_readdir(self, ino, b, n, o, cap, False)
        if op == FUSE_READDIRPLUS:
            return op_readdir(self, ino, b, n, o, cap, True)
        if op == FUSE_STATFS:
            return op_statfs(self, ino, o)
        if op == FUSE_READLINK:
            return op_readlink(self, ino, o, cap)
        if op == FUSE_ACCESS:
            return op_access(self, ino, b, n)
        if op == FUSE_FSYNC or op == FUSE_FSYNCDIR:
            return op_fsync(self, ino, b, n)
        if op == FUSE_LSEEK:
            return op_lseek(self, ino, b, n, o)
        if op in (FUSE_GETXATTR, FUSE_LISTXATTR, FUSE_SETXATTR, FUSE_REMOVEXATTR):
            if self.readonly and (op == FUSE_SETXATTR or op == FUSE_REMOVEXATTR):
                return -EROFS
            return -ENOSYS          # no xattrs: the kernel stops asking after the first ENOSYS
        if op in (FUSE_SETATTR, FUSE_SYMLINK, FUSE_MKNOD, FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME,
                  FUSE_RENAME2, FUSE_LINK, FUSE_CREATE, FUSE_FALLOCATE, FUSE_COPY_FILE_RANGE):
            if self.readonly:
                return -EROFS
            if op == FUSE_SETATTR:
                return op_setattr(self, ino, b, n, o)
            if op == FUSE_CREATE:
                return op_create(self, ino, b, n, o, h.uid, h.gid)
            if op == FUSE_MKDIR:
                return op_mkdir(self, ino, b, n, o, h.uid, h.gid)
            if op == FUSE_MKNOD:
                return op_mknod(self, ino, b, n, o, h.uid, h.gid)
            if op == FUSE_SYMLINK:
                return op_symlink(self, ino, b, n, o, h.uid, h.gid)
            if op == FUSE_LINK:
                return op_link(self, ino, b, n, o)
            if op == FUSE_UNLINK:
                return op_unlink(self, ino, b, n, 0)
            if op == FUSE_RMDIR:
                return op_unlink(self, ino, b, n, AT_REMOVEDIR)
            if op == FUSE_RENAME:
                if n < sizeof(fuse_rename_in):
                    return -EINVAL
                return op_rename(self, ino, (<const fuse_rename_in *>b).newdir, 0, b + sizeof(fuse_rename_in),
                                    n - sizeof(fuse_rename_in))
            if op == FUSE_RENAME2:
                if n < sizeof(fuse_rename2_in):
                    return -EINVAL
                return op_rename(self, ino, (<const fuse_rename2_in *>b).newdir, (<const fuse_rename2_in *>b).flags,
                                    b + sizeof(fuse_rename2_in), n - sizeof(fuse_rename2_in))
            if op == FUSE_FALLOCATE:
                return op_fallocate(self, b, n)
            if op == FUSE_COPY_FILE_RANGE:
                return op_copy_file_range(self, b, n, o)
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
        self.by_key = {((<Inode>root).dev, (<Inode>root).ino): FUSE_ROOT_ID}
