# cython: language_level=3
"""Address buses (one for port I/O, one for MMIO) that route a vCPU's access to the device covering it."""

from libc.stdint cimport uint64_t


cdef class BusDevice:
    """A device on a bus. ``offset`` is relative to the device's base; values are little-endian integers."""

    cpdef uint64_t read(self, uint64_t offset, unsigned int size):
        return 0

    cpdef void write(self, uint64_t offset, unsigned int size, uint64_t value):
        pass


cdef class Bus:
    """Non-overlapping ``[base, base+length)`` ranges; an access nobody claims reads as all ones."""

    def __init__(self, str name="bus"):
        self._ranges = []
        self.name = name
        self.unhandled = 0

    def insert(self, uint64_t base, uint64_t length, BusDevice device not None) -> None:
        cdef uint64_t end = base + length
        if length == 0 or end < base:
            raise ValueError(f"bad {self.name} range {base:#x}+{length:#x}")
        for b, e, _ in self._ranges:
            if base < e and b < end:
                raise ValueError(f"{self.name} range {base:#x}+{length:#x} overlaps {b:#x}..{e:#x}")
        self._ranges.append((base, end, device))
        self._ranges.sort(key=lambda r: r[0])

    @property
    def devices(self) -> list:
        return [(b, e - b, d) for b, e, d in self._ranges]

    cdef BusDevice find(self, uint64_t addr, uint64_t *offset):
        cdef uint64_t b, e
        for entry in self._ranges:
            b = entry[0]
            e = entry[1]
            if b <= addr < e:
                offset[0] = addr - b
                return <BusDevice>entry[2]
        return None

    cpdef uint64_t read(self, uint64_t addr, unsigned int size):
        cdef uint64_t off = 0
        cdef BusDevice dev = self.find(addr, &off)
        if dev is None:
            self.unhandled += 1
            return 0xFFFFFFFFFFFFFFFF if size >= 8 else ((<uint64_t>1 << (8 * size)) - 1)
        return dev.read(off, size)

    cpdef void write(self, uint64_t addr, unsigned int size, uint64_t value):
        cdef uint64_t off = 0
        cdef BusDevice dev = self.find(addr, &off)
        if dev is None:
            self.unhandled += 1
            return
        dev.write(off, size, value)
