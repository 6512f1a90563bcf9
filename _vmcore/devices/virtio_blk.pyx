# cython: language_level=3, wraparound=True
"""virtio-blk (device type 2) over a disk image (raw, qcow2, vmdk: ``block_image``): one device per disk,
read-only flag, flush, serial id.

Data moves between the image and guest RAM straight into bounds-checked guest pointers (no copy through Python
for raw images). The image is ``flock``-ed (shared when read-only, exclusive otherwise) for the life of the
device, so two VMs never write one disk and a crashed VMM releases it.
"""

import struct

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from _vmcore.memory cimport GuestMemory
from _vmcore.devices.block_image cimport BlockImage
from _vmcore.devices.virtqueue cimport Virtqueue, DescriptorChain
from _vmcore.devices.virtio_device cimport VirtioDevice

from _vmcore.devices.block_image import DiskError, UnsupportedImageError  # noqa: F401 - this module's errors too
from _vmcore.devices.disk_images import open_image

DEVICE_ID = 2
SECTOR = 512
F_SEG_MAX = 1 << 2
F_BLK_SIZE = 1 << 6
F_RO = 1 << 5
F_FLUSH = 1 << 9
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
ID_BYTES = 20
QUEUE_SIZE = 256


cdef class VirtioBlk(VirtioDevice):
    """``path`` is an image of ``format`` (named by the caller, never guessed from the file: a guest can write any
    header into a raw disk); ``read_only`` is enforced here (writes fail with
    IOERR), not only advertised.

    ``path=None`` makes an empty slot (capacity 0, e.g. in a snapshot template) that ``bind`` gives an image
    later; the transport then tells the driver the new capacity with a configuration-change interrupt. A slot
    never advertises read-only (the feature is negotiated once, at probe): a read-only binding is enforced here.
    """

    cdef readonly str path
    cdef readonly bint read_only
    cdef readonly bytes serial
    cdef readonly uint64_t capacity
    cdef readonly BlockImage image
    cdef readonly dict counters

    def __init__(self, path=None, bint read_only=False, serial="", format="raw"):
        self.path = ""
        self.read_only = False
        self.serial = b""
        self.capacity = 0
        self.image = None
        if path is not None:
            self._open(path, read_only, serial, format)
        features = F_SEG_MAX | F_BLK_SIZE | F_FLUSH | (F_RO if read_only and path is not None else 0)
        super().__init__(DEVICE_ID, features, [QUEUE_SIZE])
        self.counters = {"read": 0, "write": 0, "flush": 0, "get_id": 0, "errors": 0, "unsupported": 0}

    def _open(self, path, bint read_only, serial, format) -> None:
        self.image = open_image(str(path), format, read_only)
        self.path = self.image.path
        self.read_only = read_only
        self.serial = str(serial).encode()[:ID_BYTES]
        self.capacity = self.image.size // SECTOR

    @property
    def bound(self) -> bool:
        return self.image is not None

    @property
    def format(self) -> str:
        return self.image.format if self.image is not None else ""

    def bind(self, path, bint read_only=False, serial="", format="raw") -> None:
        """Give an empty slot its image. The caller (``MmioTransport.config_changed``) tells the driver."""
        if self.image is not None:
            raise DiskError(f"this disk slot already holds {self.path}")
        self._open(path, read_only, serial, format)

    def close(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None

    cpdef bytes config_bytes(self):
        # capacity, size_max, seg_max, geometry (c/h/s), blk_size
        return struct.pack("<QIIHBBI", self.capacity, 0, QUEUE_SIZE - 2, 0, 0, 0, SECTOR)

    cpdef void process_queue(self, int index) except *:
        cdef Virtqueue q = <Virtqueue>self.queues[index]
        cdef DescriptorChain chain
        while True:
            chain = q.pop()
            if chain is None:
                break
            q.add_used(chain.head, self._serve(chain))
        self.signal_used(index)

    cdef uint32_t _serve(self, DescriptorChain chain) except? 0xFFFFFFFF:
        """Serve one request; returns the bytes written into the chain (data plus the status byte)."""
        segments = chain.segments
        if not segments or not segments[-1][2]:
            self.counters["errors"] += 1
            return 0  # no writable status byte: nothing can be reported
        status_addr = segments[-1][0] + segments[-1][1] - 1
        header = chain.read_readable(0, 16)
        if len(header) < 16:
            return self._finish(status_addr, S_IOERR, 0)
        rtype, _, sector = struct.unpack("<IIQ", header)
        # data: every byte after the 16-byte header and before the status byte
        data = []
        skip = 16
        for i, (addr, length, writable) in enumerate(segments):
            if i == len(segments) - 1:
                length -= 1
            if not writable and skip:
                take = min(skip, length)
                addr += take
                length -= take
                skip -= take
            if length:
                data.append((addr, length, writable))
        total = sum(seg[1] for seg in data)
        if rtype == T_IN or rtype == T_OUT:
            return self._rw(rtype == T_OUT, sector, data, total, status_addr)
        if rtype == T_FLUSH:
            self.counters["flush"] += 1
            try:
                if self.image is not None:
                    self.image.flush()
            except OSError:
                return self._finish(status_addr, S_IOERR, 0)
            return self._finish(status_addr, S_OK, 0)
        if rtype == T_GET_ID:
            self.counters["get_id"] += 1
            if any(not w for _, _, w in data):
                return self._finish(status_addr, S_IOERR, 0)
            ident = self.serial.ljust(ID_BYTES, b"\0")
            written = chain.write_writable(0, ident[:min(ID_BYTES, total)])
            return self._finish(status_addr, S_OK, written)
        self.counters["unsupported"] += 1
        return self._finish(status_addr, S_UNSUPP, 0)

    cdef uint32_t _rw(self, bint is_write, uint64_t sector, list data, uint64_t total, uint64_t status_addr) \
            except? 0xFFFFFFFF:
        cdef uint64_t offset, addr, length
        cdef uint8_t *p
        if is_write and self.read_only:
            return self._finish(status_addr, S_IOERR, 0)
        if sector > self.capacity or total > (self.capacity - sector) * SECTOR:
            return self._finish(status_addr, S_IOERR, 0)
        offset = sector * SECTOR
        for _, _, writable in data:
            if bool(writable) == bool(is_write):  # a read must only fill writable buffers, a write only read
                return self._finish(status_addr, S_IOERR, 0)
        for seg in data:
            addr, length = seg[0], seg[1]
            p = self.mem.ptr(addr, length)
            try:
                if is_write:
                    self.image.write_at(offset, p, length)
                else:
                    self.image.read_at(offset, p, length)
            except Exception:  # noqa: BLE001 - whatever a hostile image provokes is the guest's I/O error, not ours
                return self._finish(status_addr, S_IOERR, 0)
            offset += length
        self.counters["write" if is_write else "read"] += 1
        return self._finish(status_addr, S_OK, 0 if is_write else total)

    cdef uint32_t _finish(self, uint64_t status_addr, int status, uint64_t written) except? 0xFFFFFFFF:
        if status != S_OK:
            self.counters["errors"] += 1
        self.mem.ptr(status_addr, 1)[0] = status
        return written + 1

    def identity(self) -> dict:
        """The base's, plus the capacity and read-only mode the driver saw."""
        ident = VirtioDevice.identity(self)
        ident.update(capacity=self.capacity, read_only=self.read_only)
        return ident

    def wants_ioeventfd(self) -> bool:
        return True  # a request waits on the image: the vCPU runs on meanwhile

    def state(self) -> dict:
        st = VirtioDevice.state(self)
        st.update(path=self.path, format=self.format, read_only=self.read_only,
                  serial=self.serial.decode(errors="replace"))
        return st
