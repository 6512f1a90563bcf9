# cython: language_level=3
"""CMOS/RTC stub on ports 0x70-0x71: the host's current UTC time in BCD, "update not in progress", and zeros
elsewhere. Reading 0xFF here would make the kernel's RTC probe spin for tens of thousands of reads."""

import time

from libc.stdint cimport uint8_t, uint64_t
from _vmcore.bus cimport BusDevice


cdef uint8_t _bcd(int v):
    return <uint8_t>(((v // 10) << 4) | (v % 10))


cdef class Cmos(BusDevice):
    """Mapped at port 0x70 with length 2: index register then data register."""

    cdef readonly uint8_t index

    cpdef uint64_t read(self, uint64_t offset, unsigned int size):
        if offset == 0:
            return self.index
        t = time.gmtime()
        i = self.index & 0x7F
        if i == 0x00:
            return _bcd(t.tm_sec)
        if i == 0x02:
            return _bcd(t.tm_min)
        if i == 0x04:
            return _bcd(t.tm_hour)
        if i == 0x06:
            return _bcd(t.tm_wday + 1)
        if i == 0x07:
            return _bcd(t.tm_mday)
        if i == 0x08:
            return _bcd(t.tm_mon)
        if i == 0x09:
            return _bcd(t.tm_year % 100)
        if i == 0x32:
            return _bcd(t.tm_year // 100)
        if i == 0x0A:
            return 0x26  # divider on, 1024 Hz, update-in-progress clear
        if i == 0x0B:
            return 0x02  # 24-hour mode, BCD
        if i == 0x0D:
            return 0x80  # battery good
        return 0

    cpdef void write(self, uint64_t offset, unsigned int size, uint64_t value):
        if offset == 0:
            self.index = value & 0x7F
