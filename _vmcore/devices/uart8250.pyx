# cython: language_level=3
"""A 16550A-compatible UART (8 ports at 0x3f8 for COM1), output only, for kernels built with the 8250 driver
(libkrunfw has none; a distribution vmlinux/bzImage does). The transmitter is always empty, so the driver writes
byte after byte; received data and interrupts are not modelled."""

from libc.stdint cimport uint8_t, uint64_t
from _vmcore.bus cimport BusDevice

cdef enum:
    LCR_DLAB = 0x80
    LSR_THRE_TEMT = 0x60
    IIR_NONE = 0x01
    IIR_FIFO = 0xC0


cdef class Uart8250(BusDevice):
    """``sink(data: bytes)`` receives what the guest transmits."""

    cdef public object sink
    cdef uint8_t ier, lcr, mcr, scr, dll, dlm, fcr

    def __init__(self, sink=None):
        self.sink = sink
        self.dll = 12  # 9600 baud

    def state(self) -> dict:
        return {"ier": self.ier, "lcr": self.lcr, "mcr": self.mcr, "scr": self.scr, "dll": self.dll,
                "dlm": self.dlm, "fcr": self.fcr}

    def set_state(self, dict st) -> None:
        self.ier, self.lcr, self.mcr, self.scr = st["ier"], st["lcr"], st["mcr"], st["scr"]
        self.dll, self.dlm, self.fcr = st["dll"], st["dlm"], st["fcr"]

    cpdef uint64_t read(self, uint64_t offset, unsigned int size):
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            return self.dll if dlab else 0
        if offset == 1:
            return self.dlm if dlab else self.ier
        if offset == 2:
            return IIR_NONE | (IIR_FIFO if self.fcr & 1 else 0)
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return LSR_THRE_TEMT
        if offset == 6:
            return 0xB0  # DCD, DSR, CTS
        return self.scr

    cpdef void write(self, uint64_t offset, unsigned int size, uint64_t value):
        cdef uint8_t v = value & 0xFF
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                self.dll = v
            elif self.sink is not None:
                self.sink(bytes((v,)))
        elif offset == 1:
            if dlab:
                self.dlm = v
            else:
                self.ier = v & 0x0F
        elif offset == 2:
            self.fcr = v
        elif offset == 3:
            self.lcr = v
        elif offset == 4:
            self.mcr = v & 0x1F
        elif offset == 7:
            self.scr = v
