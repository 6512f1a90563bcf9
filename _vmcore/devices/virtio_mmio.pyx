# cython: language_level=3
"""The virtio-mmio transport, version 2 (virtio 1.x, section 4.2): a 4 KiB register window per device that the
kernel finds through ``virtio_mmio.device=4K@ADDR:IRQ`` on its command line.

Interrupts go out through an eventfd registered as a KVM irqfd (no exit, no lock: ``irq_fd``); without one (the
test harness) they are counted in ``interrupts``. A backend failure (a malformed chain, a guest address outside
RAM) sets DEVICE_NEEDS_RESET, raises a configuration interrupt, and the device ignores notifies until reset.
"""

from libc.stdint cimport uint32_t, uint64_t
from posix.unistd cimport write as c_write

from _vmcore.bus cimport BusDevice
from _vmcore.memory cimport GuestMemory
from _vmcore.devices.virtqueue cimport Virtqueue
from _vmcore.devices.virtio_device cimport VirtioDevice

import threading

from _vmcore.errors import GuestMemoryError, VirtqueueError

MMIO_SIZE = 0x1000
QUEUE_NOTIFY_OFFSET = 0x50
MAGIC = 0x74726976  # "virt"
VENDOR_ID = 0x4D534258  # "MSBX"

STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_NEEDS_RESET = 0x40
STATUS_FAILED = 0x80

cdef enum:
    R_MAGIC = 0x000
    R_VERSION = 0x004
    R_DEVICE_ID = 0x008
    R_VENDOR_ID = 0x00C
    R_DEVICE_FEATURES = 0x010
    R_DEVICE_FEATURES_SEL = 0x014
    R_DRIVER_FEATURES = 0x020
    R_DRIVER_FEATURES_SEL = 0x024
    R_QUEUE_SEL = 0x030
    R_QUEUE_NUM_MAX = 0x034
    R_QUEUE_NUM = 0x038
    R_QUEUE_READY = 0x044
    R_QUEUE_NOTIFY = 0x050
    R_INTERRUPT_STATUS = 0x060
    R_INTERRUPT_ACK = 0x064
    R_STATUS = 0x070
    R_QUEUE_DESC_LOW = 0x080
    R_QUEUE_DESC_HIGH = 0x084
    R_QUEUE_DRIVER_LOW = 0x090
    R_QUEUE_DRIVER_HIGH = 0x094
    R_QUEUE_DEVICE_LOW = 0x0A0
    R_QUEUE_DEVICE_HIGH = 0x0A4
    R_SHM_SEL = 0x0AC
    R_SHM_LEN_LOW = 0x0B0
    R_SHM_LEN_HIGH = 0x0B4
    R_SHM_BASE_LOW = 0x0B8
    R_SHM_BASE_HIGH = 0x0BC
    R_CONFIG_GENERATION = 0x0FC
    R_CONFIG = 0x100

cdef uint64_t EVENT_IDX_BIT = <uint64_t>1 << 29
cdef uint64_t VERSION_1_BIT = <uint64_t>1 << 32


cdef inline uint64_t _set_half(uint64_t old, uint64_t value, bint high):
    if high:
        return (old & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32)
    return (old & 0xFFFFFFFF00000000) | (value & 0xFFFFFFFF)


cdef class MmioTransport(BusDevice):
    """Registers of one virtio-mmio device in front of a ``VirtioDevice`` backend."""

    cdef readonly VirtioDevice device
    cdef GuestMemory mem
    cdef public int irq_fd
    cdef readonly uint32_t status
    cdef readonly uint32_t interrupt_status
    cdef readonly uint32_t config_generation
    cdef uint32_t device_features_sel, driver_features_sel, queue_sel
    cdef uint64_t driver_features
    cdef readonly uint64_t interrupts
    cdef readonly uint64_t notifies
    cdef object _lock

    def __init__(self, VirtioDevice device not None, GuestMemory mem not None, int irq_fd=-1):
        self._lock = threading.RLock()  # the vCPU thread and the ioeventfd thread may both come in
        self.device = device
        self.mem = mem
        self.irq_fd = irq_fd
        device.interrupt = self.raise_interrupt
        self._reset()

    cdef void _reset(self) except *:
        self.status = 0
        self.interrupt_status = 0
        self.device_features_sel = self.driver_features_sel = self.queue_sel = 0
        self.driver_features = 0
        self.device.reset()

    def raise_interrupt(self, uint32_t kind) -> None:
        cdef uint64_t one = 1
        self.interrupt_status |= kind
        self.interrupts += 1
        if self.irq_fd >= 0:
            c_write(self.irq_fd, &one, 8)

    def config_changed(self) -> None:
        """The device's configuration changed (a disk slot was bound): new generation, configuration interrupt."""
        with self._lock:
            self.config_generation += 1
            self.raise_interrupt(2)

    def fail(self, str reason) -> None:
        """Enter the error state: the driver sees DEVICE_NEEDS_RESET after a configuration interrupt."""
        self.device.error = reason
        if not self.status & STATUS_NEEDS_RESET:
            self.status |= STATUS_NEEDS_RESET
            self.raise_interrupt(2)

    @property
    def lock(self):
        """The lock every register access and queue notify takes: hold it to keep the device still."""
        return self._lock

    @property
    def broken(self) -> bool:
        return bool(self.status & STATUS_NEEDS_RESET)

    def state(self) -> dict:
        with self._lock:
            return {"status": self.status, "interrupt_status": self.interrupt_status,
                    "config_generation": self.config_generation, "queue_sel": self.queue_sel,
                    "device_features_sel": self.device_features_sel,
                    "driver_features_sel": self.driver_features_sel,
                    "driver_features": self.driver_features, "device": self.device.state()}

    def set_state(self, dict st) -> None:
        """Registers and the backend's state as ``state()`` saved them; ready queues are re-attached to this
        transport's guest memory (a restored machine's). The backend is not activated again: the guest driver
        already did that before the snapshot."""
        with self._lock:
            self.status = st["status"]
            self.interrupt_status = st["interrupt_status"]
            self.config_generation = st["config_generation"]
            self.queue_sel = st["queue_sel"]
            self.device_features_sel = st.get("device_features_sel", 0)
            self.driver_features_sel = st.get("driver_features_sel", 0)
            self.driver_features = st["driver_features"]
            self.device.set_state(st["device"])
            if self.status & STATUS_DRIVER_OK:
                self.device.mem = self.mem
            for q in self.device.queues:
                if (<Virtqueue>q).ready:
                    (<Virtqueue>q).attach(self.mem)

    cdef Virtqueue _queue(self):
        if self.queue_sel < len(self.device.queues):
            return <Virtqueue>self.device.queues[self.queue_sel]
        return None

    cpdef uint64_t read(self, uint64_t offset, unsigned int size):
        with self._lock:
            return self._read(offset, size)

    cpdef void write(self, uint64_t offset, unsigned int size, uint64_t value):
        with self._lock:
            self._write(offset, size, value)

    cdef uint64_t _read(self, uint64_t offset, unsigned int size) except? 0xFFFFFFFFFFFFFFFF:
        cdef Virtqueue q
        if offset >= R_CONFIG:
            cfg = self.device.config_bytes()
            off = offset - R_CONFIG
            if off + size > len(cfg):
                return 0
            return int.from_bytes(cfg[off:off + size], "little")
        if size != 4:
            return 0
        if offset == R_MAGIC:
            return MAGIC
        if offset == R_VERSION:
            return 2
        if offset == R_DEVICE_ID:
            return self.device.device_id
        if offset == R_VENDOR_ID:
            return VENDOR_ID
        if offset == R_DEVICE_FEATURES:
            if self.device_features_sel > 1:
                return 0
            return (self.device.avail_features >> (32 * self.device_features_sel)) & 0xFFFFFFFF
        if offset == R_QUEUE_NUM_MAX:
            q = self._queue()
            return q.max_size if q is not None else 0
        if offset == R_QUEUE_READY:
            q = self._queue()
            return 1 if q is not None and q.ready else 0
        if offset == R_INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == R_STATUS:
            return self.status
        if offset == R_CONFIG_GENERATION:
            return self.config_generation
        if offset == R_SHM_LEN_LOW or offset == R_SHM_LEN_HIGH or offset == R_SHM_BASE_LOW \
                or offset == R_SHM_BASE_HIGH:
            return 0xFFFFFFFF  # no shared memory regions
        return 0

    cdef void _write(self, uint64_t offset, unsigned int size, uint64_t value) except *:
        cdef Virtqueue q
        if offset >= R_CONFIG:
            self.device.write_config(offset - R_CONFIG, value.to_bytes(8, "little")[:size])
            self.config_generation += 1
            return
        if size != 4:
            return
        if offset == R_QUEUE_NOTIFY:
            self.notify(value & 0xFFFF)
        elif offset == R_DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == R_DRIVER_FEATURES:
            if self.driver_features_sel <= 1 and not self.status & STATUS_FEATURES_OK:
                self.driver_features = _set_half(self.driver_features, value, self.driver_features_sel == 1)
        elif offset == R_DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == R_QUEUE_SEL:
            self.queue_sel = value
        elif offset == R_INTERRUPT_ACK:
            self.interrupt_status &= ~value
        elif offset == R_STATUS:
            self._write_status(value & 0xFF)
        else:
            q = self._queue()
            if q is None or q.ready and offset != R_QUEUE_READY:
                return  # queue registers are frozen while the queue is live
            if offset == R_QUEUE_NUM:
                q.size = value & 0xFFFF
            elif offset == R_QUEUE_READY:
                self._set_queue_ready(q, value == 1)
            elif offset == R_QUEUE_DESC_LOW or offset == R_QUEUE_DESC_HIGH:
                q.desc_addr = _set_half(q.desc_addr, value, offset == R_QUEUE_DESC_HIGH)
            elif offset == R_QUEUE_DRIVER_LOW or offset == R_QUEUE_DRIVER_HIGH:
                q.avail_addr = _set_half(q.avail_addr, value, offset == R_QUEUE_DRIVER_HIGH)
            elif offset == R_QUEUE_DEVICE_LOW or offset == R_QUEUE_DEVICE_HIGH:
                q.used_addr = _set_half(q.used_addr, value, offset == R_QUEUE_DEVICE_HIGH)

    cdef void _set_queue_ready(self, Virtqueue q, bint ready) except *:
        if not ready:
            q.ready = False
            return
        q.event_idx = bool(self.driver_features & EVENT_IDX_BIT)
        try:
            q.attach(self.mem)
        except (VirtqueueError, GuestMemoryError) as e:
            self.fail(f"queue {self.queue_sel}: {e}")
            return
        q.ready = True

    cdef void _write_status(self, uint32_t value) except *:
        if value == 0:
            self._reset()
            return
        if value & STATUS_FEATURES_OK and not self.status & STATUS_FEATURES_OK:
            offered = self.device.avail_features
            if self.driver_features & ~offered or not self.driver_features & VERSION_1_BIT:
                value &= ~STATUS_FEATURES_OK  # the driver reads it back and gives up
            else:
                self.device.acked_features = self.driver_features
        if value & STATUS_DRIVER_OK and not self.status & STATUS_DRIVER_OK:
            self.status = value | (self.status & STATUS_NEEDS_RESET)
            self.device.mem = self.mem
            try:
                self.device.activate()
                self.device.activated = True
            except Exception as e:
                self.fail(f"activation failed: {e}")
            return
        self.status = value | (self.status & STATUS_NEEDS_RESET)

    def notify(self, int index) -> None:
        """The driver kicked queue ``index`` (a QueueNotify write, or an ioeventfd that fired)."""
        with self._lock:
            self._notify(index)

    cdef void _notify(self, int index) except *:
        self.notifies += 1
        if not self.status & STATUS_DRIVER_OK or self.status & STATUS_NEEDS_RESET:
            return
        if index >= len(self.device.queues) or not (<Virtqueue>self.device.queues[index]).ready:
            return
        try:
            self.device.process_queue(index)
        except (VirtqueueError, GuestMemoryError) as e:
            self.fail(f"queue {index}: {e}")
