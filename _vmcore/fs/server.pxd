# cython: language_level=3
"""C-level face of the FUSE server core, for transports written in Cython (``/dev/fuse``, virtio-fs)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from posix.stat cimport struct_stat
from posix.uio cimport iovec
from _vmcore.fs.abi cimport fuse_in_header, fuse_entry_out
from _vmcore.fs.quota cimport QuotaAccount


cdef class _Inode:
    cdef int fd                 # O_PATH | O_NOFOLLOW descriptor: the inode itself, never a path
    cdef uint64_t dev, ino, nlookup
    cdef uint32_t kind          # st_mode & S_IFMT, fixed for the inode's life


cdef class _Handle:
    cdef int fd                 # a real open descriptor (file or directory)
    cdef bint is_dir, writable
    cdef _Inode inode


cdef class FuseServer:
    cdef int root_fd, proc_fd
    cdef dict inodes, by_key, handles
    cdef uint64_t next_nodeid, next_fh
    cdef readonly bint readonly
    cdef bint initialized, closed
    cdef QuotaAccount account   # None: no quota
    cdef uint64_t t_sec
    cdef uint32_t t_nsec
    cdef readonly uint32_t max_write
    cdef uint64_t counts[64]     # requests served, by opcode (the last slot: everything past 62)
    cdef bint switch_creds       # running as root: create as the caller (setfsuid/setfsgid)
    cdef uint32_t open_flags     # FOPEN_* flags given to every OPEN/CREATE reply
    cdef uint64_t neg_sec        # how long the guest may remember that a name does not exist (0: not at all)
    cdef uint32_t neg_nsec
    cdef readonly bint no_open   # OPEN/OPENDIR answer ENOSYS: the kernel opens without asking from then on
    cdef bint warned_fd_limit    # the first EMFILE was reported on stderr
    cdef object __weakref__

    cdef Py_ssize_t handle_raw(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap) noexcept
    cdef Py_ssize_t handle_data(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap,
                                iovec *data, int ndata) noexcept
    cdef Py_ssize_t _handle(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap, iovec *data,
                            int ndata) noexcept
    # private helpers (declared here because Cython requires it for cdef methods of a .pxd class)
    cdef void _close_fds(self) noexcept
    cdef Py_ssize_t _dispatch(self, const fuse_in_header *h, const uint8_t *b, size_t n, uint8_t *o, size_t cap,
                              iovec *data, int ndata)
    cdef Py_ssize_t _init(self, const uint8_t *b, size_t n, uint8_t *o)
    cdef void _reset(self)
    cdef void _forget(self, uint64_t nodeid, uint64_t count)
    cdef void _batch_forget(self, const uint8_t *b, size_t n)
    cdef uint64_t _intern(self, int fd, const struct_stat *st)
    cdef void _fill_entry(self, fuse_entry_out *e, uint64_t nodeid, const struct_stat *st) noexcept
    cdef Py_ssize_t _entry_at(self, _Inode directory, const char *name, fuse_entry_out *e)
    cdef Py_ssize_t _entry_from_open_fd(self, int fd, fuse_entry_out *e)
    cdef int _reopen(self, _Inode ino, int flags)
    cdef void _become(self, uint32_t uid, uint32_t gid) noexcept
    cdef void _unbecome(self, uint32_t uid, uint32_t gid) noexcept
    cdef int64_t _need(self, const struct_stat *st, int64_t off, int64_t length) noexcept
    cdef int64_t _fit(self, const struct_stat *st, int64_t off, int64_t length) noexcept
    cdef int64_t _take(self, const struct_stat *st, int64_t off, int64_t *length) noexcept
    cdef void _settle(self, int64_t reserved, int64_t before, int fd) noexcept
    cdef bint _charge_inode(self, int64_t reserved, int dirfd, const char *name) noexcept
    cdef Py_ssize_t _lookup(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o)
    cdef Py_ssize_t _getattr(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o)
    cdef Py_ssize_t _setattr(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o)
    cdef Py_ssize_t _statfs(self, _Inode ino, uint8_t *o)
    cdef Py_ssize_t _readlink(self, _Inode ino, uint8_t *o, size_t cap)
    cdef Py_ssize_t _access(self, _Inode ino, const uint8_t *b, size_t n)
    cdef uint64_t _new_handle(self, int fd, _Inode ino, bint is_dir, bint writable)
    cdef Py_ssize_t _open(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o)
    cdef Py_ssize_t _opendir(self, _Inode ino, uint8_t *o)
    cdef Py_ssize_t _release(self, const uint8_t *b, size_t n)
    cdef _Handle _file(self, _Inode ino, uint64_t fh, bint want_dir)
    cdef Py_ssize_t _no_file(self) noexcept
    cdef Py_ssize_t _read(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap, iovec *data, int ndata)
    cdef Py_ssize_t _write(self, const uint8_t *b, size_t n, uint8_t *o, iovec *data, int ndata)
    cdef Py_ssize_t _fsync(self, _Inode ino, const uint8_t *b, size_t n)
    cdef Py_ssize_t _lseek(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o)
    cdef Py_ssize_t _fallocate(self, const uint8_t *b, size_t n)
    cdef Py_ssize_t _copy_file_range(self, const uint8_t *b, size_t n, uint8_t *o)
    cdef Py_ssize_t _readdir(self, _Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap, bint plus)
    cdef Py_ssize_t _create(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid)
    cdef Py_ssize_t _mkdir(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid)
    cdef Py_ssize_t _mknod(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid)
    cdef Py_ssize_t _symlink(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid)
    cdef Py_ssize_t _link(self, _Inode parent, const uint8_t *b, size_t n, uint8_t *o)
    cdef int64_t _released_bytes(self, int dirfd, const char *name)
    cdef Py_ssize_t _unlink(self, _Inode parent, const uint8_t *b, size_t n, int flags)
    cdef Py_ssize_t _rename(self, _Inode parent, uint64_t newdir, uint32_t flags, const uint8_t *b, size_t n)
