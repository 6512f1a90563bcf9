# cython: language_level=3
"""What virtio-blk reads and writes: a disk image of some format, as guest-visible bytes.

``BlockImage`` is the interface (``read_at``/``write_at``/``flush`` at byte offsets, callable without Python
objects on the data path); ``RawImage`` is the identity. The image file is ``flock``-ed for the life of the object
(shared when read-only, exclusive otherwise), so two VMs never write one disk and a crashed VMM releases it.
Every format reader treats the file as hostile: sizes and offsets are checked before use, reads are bounded.
"""

import fcntl
import os

from libc.errno cimport errno, EINTR
from libc.stdint cimport uint8_t, uint64_t
from posix.unistd cimport pread, pwrite, fdatasync, close as c_close

from _vmcore.errors import VmmError


class DiskError(VmmError):
    """A disk image cannot be opened (missing, locked, unreadable)."""


class UnsupportedImageError(DiskError):
    """The image is of a format, variant or feature this VMM does not read (or not write)."""


cdef int pread_full(int fd, uint8_t *buf, uint64_t length, uint64_t offset) except -1:
    """Read exactly ``length`` bytes; past the end of the file is an error (EIO), never silent zeros."""
    cdef long n
    while length:
        with nogil:
            n = pread(fd, buf, length, offset)
        if n < 0:
            if errno == EINTR:
                continue
            raise OSError(errno, os.strerror(errno))
        if n == 0:
            raise OSError(5, "read past the end of the image file")
        buf += n
        length -= n
        offset += n
    return 0


cdef int pwrite_full(int fd, const uint8_t *buf, uint64_t length, uint64_t offset) except -1:
    cdef long n
    while length:
        with nogil:
            n = pwrite(fd, buf, length, offset)
        if n < 0:
            if errno == EINTR:
                continue
            raise OSError(errno, os.strerror(errno))
        buf += n
        length -= n
        offset += n
    return 0


def open_locked(path, bint read_only) -> int:
    """Open ``path`` (a regular file, never following a FIFO or device into a hang) and lock it for this VM."""
    path = os.fspath(path)
    try:
        fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise DiskError(f"cannot open disk {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000 or st.st_mode & 0o170000 == 0o060000):
            raise DiskError(f"disk {path} is not a regular file or block device")
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            raise DiskError(f"disk {path} is in use by another VM") from None
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


cdef class BlockImage:
    """An open disk image. Subclasses set ``size`` and implement the three data methods; ``fd`` is the image
    file, closed by ``close()``."""

    def __cinit__(self):
        self.fd = -1

    def __init__(self, path, bint read_only=False):
        self.path = os.fspath(path)
        self.read_only = read_only
        self.format = "raw"
        self.size = 0

    cdef int read_at(self, uint64_t offset, uint8_t *buf, uint64_t length) except -1:
        raise NotImplementedError

    cdef int write_at(self, uint64_t offset, const uint8_t *buf, uint64_t length) except -1:
        raise NotImplementedError

    cdef int flush(self) except -1:
        if self.fd >= 0 and not self.read_only and fdatasync(self.fd) != 0:
            raise OSError(errno, os.strerror(errno))
        return 0

    def _check_range(self, uint64_t offset, uint64_t length):
        if offset > self.size or length > self.size - offset:
            raise OSError(5, f"range {offset}+{length} is past the end of the disk ({self.size} bytes)")

    # Python-level access, for tests and tools (the device uses the cdef methods).
    def read(self, uint64_t offset, uint64_t length) -> bytes:
        self._check_range(offset, length)
        out = bytearray(length)
        cdef uint8_t[::1] view = out
        if length:
            self.read_at(offset, &view[0], length)
        return bytes(out)

    def write(self, uint64_t offset, data) -> None:
        if self.read_only:
            raise OSError(30, "the disk is read-only")
        cdef const uint8_t[::1] view = bytes(data)
        self._check_range(offset, len(view))
        if len(view):
            self.write_at(offset, &view[0], len(view))

    def sync(self) -> None:
        self.flush()

    def close(self) -> None:
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    def __dealloc__(self):
        if self.fd >= 0:
            c_close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


cdef class RawImage(BlockImage):
    """The file is the disk."""

    def __init__(self, path, bint read_only=False):
        BlockImage.__init__(self, path, read_only)
        self.fd = open_locked(path, read_only)
        st = os.fstat(self.fd)
        if st.st_mode & 0o170000 == 0o060000:
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
        else:
            self.size = st.st_size

    cdef int read_at(self, uint64_t offset, uint8_t *buf, uint64_t length) except -1:
        return pread_full(self.fd, buf, length, offset)

    cdef int write_at(self, uint64_t offset, const uint8_t *buf, uint64_t length) except -1:
        if self.read_only:
            raise OSError(30, "the disk is read-only")
        return pwrite_full(self.fd, buf, length, offset)
