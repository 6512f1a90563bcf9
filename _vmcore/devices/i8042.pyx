# cython: language_level=3
"""i8042 keyboard controller stub on ports 0x60-0x64: no keyboard, and a write of 0xFE to the command port is
the guest asking for a reset (``reboot=k``)."""

from libc.stdint cimport uint64_t
from _vmcore.bus cimport BusDevice

cdef enum:
    CMD_RESET = 0xFE


cdef class I8042(BusDevice):
    """Mapped at port 0x60 with length 5. ``on_reset`` is called (with the GIL) when the guest resets."""

    cdef public object on_reset
    cdef readonly int resets

    def __init__(self, on_reset=None):
        self.on_reset = on_reset
        self.resets = 0

    cpdef uint64_t read(self, uint64_t offset, unsigned int size):
        return 0  # status 0: output buffer empty, input buffer empty, so the kernel never waits

    cpdef void write(self, uint64_t offset, unsigned int size, uint64_t value):
        if offset == 4 and (value & 0xFF) == CMD_RESET:
            self.resets += 1
            if self.on_reset is not None:
                self.on_reset()
