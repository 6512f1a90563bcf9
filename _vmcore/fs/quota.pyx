# cython: language_level=3
"""A directory's quota account: one counter of the bytes the tree occupies, shared by every server and every
host-side writer of that directory, whichever process they run in.

The unit is what the tree really costs the host: allocated blocks (``st_blocks``) plus a fixed charge per inode,
so directories, symlinks and sparse files count as what they take, not as their apparent sizes. The counter lives
in a small shared file keyed by the directory's device and inode (``/dev/shm/msb-quota-<uid>/<dev>-<ino>``),
mapped by each user and changed with atomic operations. Each user holds a shared ``flock`` on it; the first one
(no one else holds it) measures the tree afresh, so changes made while nobody served it are counted, and the last
one removes the file. A writer reserves before it allocates and settles with the blocks it actually got after.
"""

import errno
import fcntl
import mmap
import os
import stat as stat_mod
import tempfile

from libc.stdint cimport int64_t

cdef extern from *:
    """
    static inline int64_t msb_atomic_load(int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void msb_atomic_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int msb_atomic_cas(int64_t *p, int64_t *expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    """
    int64_t msb_atomic_load(int64_t *p) nogil
    void msb_atomic_store(int64_t *p, int64_t v) nogil
    bint msb_atomic_cas(int64_t *p, int64_t *expected, int64_t desired) nogil

INODE_BYTES = INODE_COST  # for Python callers (the constant itself is in quota.pxd)
BLOCK = 4096  # what a reservation rounds to (the servers' and VolumeFs's)
MAGIC = b"MSBQUOTA"


def cost(st) -> int:
    """What one inode costs the tree."""
    return st.st_blocks * 512 + INODE_COST


def tree_cost(root, *, dir_fd=None) -> int:
    """The cost of everything under ``root`` (itself not counted; relative to ``dir_fd`` if given), hard links
    once, symlinks never followed. Iterative and descriptor-based: any depth a guest made (one descriptor per
    level), no path ever walked."""
    seen = set()
    total = 0
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    stack = [(top, os.scandir(top))]
    try:
        while stack:
            fd, entries = stack[len(stack) - 1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                os.close(fd)
                stack.pop()
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if (st.st_dev, st.st_ino) not in seen:
                if st.st_nlink > 1:
                    seen.add((st.st_dev, st.st_ino))
                total += cost(st)
            if stat_mod.S_ISDIR(st.st_mode):
                try:
                    child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                    dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue  # replaced meanwhile
                    raise
                stack.append((child, os.scandir(child)))
    finally:
        for fd, entries in stack:
            entries.close()
            os.close(fd)
    return total


def accounts_dir() -> str | None:
    """A directory of this user's, on a memory file system where there is one; None when it is not ours."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    path = os.path.join(base, f"msb-quota-{os.geteuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat_mod.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None  # someone else's, or open to them: keep the account private rather than trust it
    return path


cdef class QuotaAccount:
    """The account of directory ``root`` with a limit of ``limit`` bytes (each user states its own limit; the
    count is shared). ``shared=False`` keeps a private count (tests, or where no shared directory is ours)."""

    def __cinit__(self):
        self.fd = -1
        self.cell = NULL

    def __init__(self, root, int64_t limit, *, bint shared=True):
        self.limit = limit
        self.path = ""
        root = os.fspath(root)
        directory = accounts_dir() if shared else None
        if directory is None:
            self._map = mmap.mmap(-1, mmap.PAGESIZE)
            self._attach()
            msb_atomic_store(self.cell, tree_cost(root))
            return
        st = os.stat(root)
        self.path = os.path.join(directory, f"{st.st_dev}-{st.st_ino}")
        self._join(root)

    cdef void _attach(self) except *:
        cdef unsigned char[::1] view = self._map
        self._view = view
        self.cell = <int64_t *>&view[8]

    def _join(self, root) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    first = True
                except BlockingIOError:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    first = False
                if not self._still_named(fd):
                    os.close(fd)  # the last user removed it meanwhile: start over with a new one
                    continue
                if first:
                    os.ftruncate(fd, mmap.PAGESIZE)
                self._map = mmap.mmap(fd, mmap.PAGESIZE)
                self._attach()
                if first or self._map[:8] != MAGIC:
                    msb_atomic_store(self.cell, tree_cost(root))
                    self._map[:8] = MAGIC
                    fcntl.flock(fd, fcntl.LOCK_SH)
            except BaseException:
                self._view = None
                if self._map is not None:
                    self._map.close()
                    self._map = None
                os.close(fd)
                raise
            self.fd = fd
            return

    def _still_named(self, int fd) -> bool:
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    @property
    def used(self) -> int:
        return msb_atomic_load(self.cell) if self.cell != NULL else 0

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)

    cpdef bint reserve(self, int64_t n):
        """Take ``n`` bytes if they fit under the limit (all or nothing)."""
        cdef int64_t now
        if n <= 0:
            return True
        now = msb_atomic_load(self.cell)
        while True:
            if now + n > self.limit:
                return False
            if msb_atomic_cas(self.cell, &now, now + n):
                return True

    cpdef void settle(self, int64_t reserved, int64_t actual):
        """An operation reserved ``reserved`` and changed the tree's cost by ``actual`` (negative: freed). What
        was allocated stays counted even past the limit: it is there."""
        cdef int64_t now, want
        if actual == reserved:
            return
        now = msb_atomic_load(self.cell)
        while True:
            want = now + actual - reserved
            if want < 0:
                want = 0
            if msb_atomic_cas(self.cell, &now, want):
                return

    def close(self) -> None:
        """Leave the account; the last user removes its file. Idempotent."""
        self._leave()

    cdef void _leave(self) noexcept:
        cdef int fd = self.fd
        self.cell = NULL
        self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None
        if fd < 0:
            return
        self.fd = -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if self._still_named(fd):
                os.unlink(self.path)
        except OSError:
            pass  # others still use it (or it is gone): theirs to remove
        finally:
            os.close(fd)

    def __dealloc__(self):
        self._leave()  # an account dropped without close(): still not left behind
