"""A guest-driver harness: plays the part of the guest's virtio driver over a ``GuestMemory``.

``QueueDriver`` lays a split virtqueue out in guest memory and builds descriptor chains (direct or through an
indirect table), publishes them in the available ring and reads back the used ring. ``MmioDriver`` brings a
virtio-mmio device up through its registers the way Linux's virtio_mmio driver does. Malformed chains are
written with ``write_descriptor`` and ``publish`` directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from _vmcore.devices.virtqueue import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE

F_NEXT, F_WRITE, F_INDIRECT = VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT

# virtio-mmio registers
MAGIC, VERSION, DEVICE_ID, DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x0, 0x4, 0x8, 0x10, 0x14
DRIVER_FEATURES, DRIVER_FEATURES_SEL, QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM = 0x20, 0x24, 0x30, 0x34, 0x38
QUEUE_READY, QUEUE_NOTIFY, INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x44, 0x50, 0x60, 0x64, 0x70
QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE, CONFIG = 0x80, 0x90, 0xA0, 0x100
ACK, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET = 1, 2, 4, 8, 0x40


@dataclass
class Buf:
    """A buffer of a chain: ``data`` to place (device-readable) or ``size`` bytes for the device to write."""

    data: bytes = b""
    size: int = 0
    writable: bool = False

    @classmethod
    def out(cls, data: bytes) -> Buf:
        return cls(data=data, size=len(data))

    @classmethod
    def into(cls, size: int) -> Buf:
        return cls(size=size, writable=True)


class Allocator:
    """Bump allocator of guest physical memory for rings and buffers."""

    def __init__(self, start: int, end: int) -> None:
        self.next, self.end = start, end

    def alloc(self, size: int, align: int = 16) -> int:
        addr = (self.next + align - 1) & ~(align - 1)
        if addr + size > self.end:
            raise MemoryError("harness ran out of guest memory")
        self.next = addr + size
        return addr


class QueueDriver:
    def __init__(self, mem, alloc: Allocator, size: int = 16) -> None:
        self.mem, self.alloc, self.size = mem, alloc, size
        self.desc = alloc.alloc(16 * size, 16)
        self.avail = alloc.alloc(6 + 2 * size, 2)
        self.used = alloc.alloc(6 + 8 * size, 4)
        mem.fill(self.desc, 16 * size)
        mem.fill(self.avail, 6 + 2 * size)
        mem.fill(self.used, 6 + 8 * size)
        self.avail_idx = 0
        self.last_used = 0
        self.next_desc = 0
        self.buffers: dict[int, list[tuple[int, Buf]]] = {}

    def write_descriptor(self, index: int, addr: int, length: int, flags: int = 0, next_: int = 0,
                         table: int | None = None) -> None:
        base = self.desc if table is None else table
        self.mem.write(base + 16 * index, struct.pack("<QIHH", addr, length, flags, next_))

    def publish(self, head: int) -> None:
        self.mem.write_u16(self.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.write_u16(self.avail + 2, self.avail_idx)

    def _place(self, bufs: list[Buf]) -> list[tuple[int, Buf]]:
        placed = []
        for b in bufs:
            addr = self.alloc.alloc(max(b.size, 1))
            if b.writable:
                self.mem.fill(addr, b.size, 0xAA)  # poison: shows what the device wrote
            else:
                self.mem.write(addr, b.data)
            placed.append((addr, b))
        return placed

    def add_chain(self, bufs: list[Buf], indirect: bool = False) -> int:
        """Place ``bufs`` in guest memory, chain them, publish the chain; returns its head index."""
        placed = self._place(bufs)
        head = self.next_desc
        if indirect:
            table = self.alloc.alloc(16 * len(placed))
            for i, (addr, b) in enumerate(placed):
                more = i + 1 < len(placed)
                self.write_descriptor(i, addr, b.size, (F_WRITE if b.writable else 0) | (F_NEXT if more else 0),
                                      i + 1 if more else 0, table=table)
            self.write_descriptor(head, table, 16 * len(placed), F_INDIRECT)
            self.next_desc = (head + 1) % self.size
        else:
            for i, (addr, b) in enumerate(placed):
                idx = (head + i) % self.size
                more = i + 1 < len(placed)
                self.write_descriptor(idx, addr, b.size, (F_WRITE if b.writable else 0) | (F_NEXT if more else 0),
                                      (idx + 1) % self.size if more else 0)
            self.next_desc = (head + len(placed)) % self.size
        self.buffers[head] = placed
        self.publish(head)
        return head

    def used_entries(self) -> list[tuple[int, int]]:
        """New (head, written length) entries the device put in the used ring since the last call."""
        idx = self.mem.read_u16(self.used + 2)
        out = []
        while self.last_used != idx:
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            out.append((self.mem.read_u32(slot), self.mem.read_u32(slot + 4)))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out

    def read_buffer(self, head: int, n: int) -> bytes:
        addr, b = self.buffers[head][n]
        return self.mem.read(addr, b.size)

    def set_used_event(self, value: int) -> None:
        self.mem.write_u16(self.avail + 4 + 2 * self.size, value)

    def avail_event(self) -> int:
        return self.mem.read_u16(self.used + 4 + 8 * self.size)


class MmioDriver:
    """Brings up a device behind an ``MmioTransport`` like Linux's virtio_mmio + virtio core."""

    def __init__(self, transport, mem, alloc: Allocator) -> None:
        self.t, self.mem, self.alloc = transport, mem, alloc
        self.queues: dict[int, QueueDriver] = {}

    def rd(self, off: int) -> int:
        return self.t.read(off, 4)

    def wr(self, off: int, value: int) -> None:
        self.t.write(off, 4, value)

    def device_features(self) -> int:
        self.wr(DEVICE_FEATURES_SEL, 0)
        low = self.rd(DEVICE_FEATURES)
        self.wr(DEVICE_FEATURES_SEL, 1)
        return low | (self.rd(DEVICE_FEATURES) << 32)

    def config(self, offset: int, size: int) -> int:
        return self.t.read(CONFIG + offset, size)

    def setup(self, queue_count: int, queue_size: int = 16, features: int | None = None) -> int:
        """Reset, negotiate (all offered features unless ``features``), set up queues, DRIVER_OK."""
        assert self.rd(MAGIC) == 0x74726976 and self.rd(VERSION) == 2
        self.wr(STATUS, 0)
        self.wr(STATUS, ACK)
        self.wr(STATUS, ACK | DRIVER)
        offered = self.device_features()
        wanted = offered if features is None else features
        for sel in (0, 1):
            self.wr(DRIVER_FEATURES_SEL, sel)
            self.wr(DRIVER_FEATURES, (wanted >> (32 * sel)) & 0xFFFFFFFF)
        self.wr(STATUS, ACK | DRIVER | FEATURES_OK)
        if not self.rd(STATUS) & FEATURES_OK:
            return 0
        for i in range(queue_count):
            self.wr(QUEUE_SEL, i)
            size = min(queue_size, self.rd(QUEUE_NUM_MAX))
            q = QueueDriver(self.mem, self.alloc, size)
            self.wr(QUEUE_NUM, size)
            for reg, addr in ((QUEUE_DESC, q.desc), (QUEUE_DRIVER, q.avail), (QUEUE_DEVICE, q.used)):
                self.wr(reg, addr & 0xFFFFFFFF)
                self.wr(reg + 4, addr >> 32)
            self.wr(QUEUE_READY, 1)
            self.queues[i] = q
        self.wr(STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK)
        return wanted

    def notify(self, index: int) -> None:
        self.wr(QUEUE_NOTIFY, index)

    @property
    def needs_reset(self) -> bool:
        return bool(self.rd(STATUS) & NEEDS_RESET)
