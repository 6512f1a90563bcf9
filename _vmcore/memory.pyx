# cython: language_level=3
"""Guest RAM: one host mapping seen by the guest at physical address 0.

Every access the VMM makes on the guest's behalf goes through ``ptr()``, which checks the whole range
against the mapping (with overflow-safe arithmetic), so a guest-supplied address can never reach host memory
outside guest RAM. Two constructors: an anonymous private mapping (a fresh boot) and ``from_file``, a file
mapped ``MAP_PRIVATE`` (a snapshot restored copy-on-write, issue 9).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.mman cimport mmap, munmap, madvise, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED
from posix.fcntl cimport open as c_open, O_RDONLY, O_CLOEXEC
from posix.unistd cimport close as c_close
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

from _vmcore.errors import GuestMemoryError

cdef extern from "<sys/mman.h>" nogil:
    int MAP_NORESERVE
    int MADV_MERGEABLE
    int MADV_DONTFORK


cdef class GuestMemory:
    """``size`` bytes of guest RAM at guest physical 0 (``address`` is the host address KVM maps)."""

    def __cinit__(self):
        self.base = NULL
        self.size = 0
        self.kind = "none"

    def __init__(self, uint64_t size):
        if size == 0 or size % 4096:
            raise GuestMemoryError(f"guest memory size must be a positive multiple of 4096, not {size}")
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED:
            raise GuestMemoryError(f"cannot map {size} bytes of guest memory")
        madvise(p, size, MADV_DONTFORK)
        self.base = <uint8_t *>p
        self.size = size
        self.kind = "anonymous"

    @classmethod
    def from_file(cls, path, uint64_t size):
        """Map ``size`` bytes of ``path`` copy-on-write: guest writes never reach the file."""
        cdef GuestMemory self = cls.__new__(cls)
        cdef bytes raw = str(path).encode()
        cdef int fd = c_open(raw, O_RDONLY | O_CLOEXEC)
        if fd < 0:
            raise GuestMemoryError(f"cannot open memory file {path}")
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0)
        c_close(fd)
        if p == MAP_FAILED:
            raise GuestMemoryError(f"cannot map {size} bytes of {path}")
        self.base = <uint8_t *>p
        self.size = size
        self.kind = "file"
        return self

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL

    def close(self) -> None:
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL
            self.size = 0

    @property
    def address(self) -> int:
        return <uint64_t>self.base

    cdef bint contains(self, uint64_t gpa, uint64_t length) noexcept nogil:
        return self.base != NULL and gpa <= self.size and length <= self.size - gpa

    cdef uint8_t *ptr(self, uint64_t gpa, uint64_t length) except NULL:
        if not self.contains(gpa, length):
            raise GuestMemoryError(f"guest range [{gpa:#x}, +{length:#x}) is outside guest RAM ({self.size:#x} bytes)")
        return self.base + gpa

    def check(self, uint64_t gpa, uint64_t length) -> bool:
        return self.contains(gpa, length)

    def read(self, uint64_t gpa, uint64_t length) -> bytes:
        cdef uint8_t *p = self.ptr(gpa, length)
        return PyBytes_FromStringAndSize(<char *>p, length)

    def write(self, uint64_t gpa, const uint8_t[::1] data) -> None:
        cdef uint64_t n = data.shape[0]
        if n == 0:
            self.ptr(gpa, 0)
            return
        memcpy(self.ptr(gpa, n), &data[0], n)

    def fill(self, uint64_t gpa, uint64_t length, int value=0) -> None:
        memset(self.ptr(gpa, length), value, length)

    def read_u8(self, uint64_t gpa) -> int:
        return self.ptr(gpa, 1)[0]

    def read_u16(self, uint64_t gpa) -> int:
        cdef uint16_t v
        memcpy(&v, self.ptr(gpa, 2), 2)
        return v

    def read_u32(self, uint64_t gpa) -> int:
        cdef uint32_t v
        memcpy(&v, self.ptr(gpa, 4), 4)
        return v

    def read_u64(self, uint64_t gpa) -> int:
        cdef uint64_t v
        memcpy(&v, self.ptr(gpa, 8), 8)
        return v

    def write_u8(self, uint64_t gpa, uint8_t v) -> None:
        self.ptr(gpa, 1)[0] = v

    def write_u16(self, uint64_t gpa, uint16_t v) -> None:
        memcpy(self.ptr(gpa, 2), &v, 2)

    def write_u32(self, uint64_t gpa, uint32_t v) -> None:
        memcpy(self.ptr(gpa, 4), &v, 4)

    def write_u64(self, uint64_t gpa, uint64_t v) -> None:
        memcpy(self.ptr(gpa, 8), &v, 8)
