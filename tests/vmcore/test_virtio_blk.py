"""virtio-blk driven through its virtio-mmio registers and virtqueue by the guest-driver harness."""

from __future__ import annotations

import struct

import pytest

from _vmcore.devices.virtio_blk import F_FLUSH, F_RO, DiskError, VirtioBlk
from _vmcore.devices.virtio_mmio import MmioTransport
from tests.vmcore.harness import F_NEXT, F_WRITE, Buf, MmioDriver

T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD = 0, 1, 4, 8, 11
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
SECTORS = 64


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(range(256)) * (SECTORS * 2))
    return path


def bring_up(mem, alloc, path, read_only=False, serial="disk-1", **setup):
    dev = VirtioBlk(path, read_only=read_only, serial=serial)
    transport = MmioTransport(dev, mem)
    drv = MmioDriver(transport, mem, alloc)
    drv.setup(1, **setup)
    return dev, transport, drv


def header(rtype, sector=0):
    return Buf.out(struct.pack("<IIQ", rtype, 0, sector))


def status_of(drv, head, n):
    return drv.queues[0].read_buffer(head, n)[0]


def test_features_and_config(mem, alloc, disk):
    dev, _, drv = bring_up(mem, alloc, disk, read_only=True)
    assert drv.rd(0x8) == 2
    feats = drv.device_features()
    assert feats & F_RO and feats & F_FLUSH and feats & (1 << 32)
    assert drv.config(0, 8) == SECTORS
    assert drv.config(20, 4) == 512
    dev.close()


@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
def test_read_sectors(mem, alloc, disk, indirect):
    dev, t, drv = bring_up(mem, alloc, disk)
    q = drv.queues[0]
    head = q.add_chain([header(T_IN, 2), Buf.into(512), Buf.into(512), Buf.into(1)], indirect=indirect)
    drv.notify(0)
    assert q.used_entries() == [(head, 1025)]
    data = disk.read_bytes()
    assert q.read_buffer(head, 1) == data[1024:1536] and q.read_buffer(head, 2) == data[1536:2048]
    assert status_of(drv, head, 3) == S_OK
    assert t.interrupts == 1
    dev.close()


def test_write_then_flush(mem, alloc, disk):
    dev, _, drv = bring_up(mem, alloc, disk)
    q = drv.queues[0]
    w = q.add_chain([header(T_OUT, 5), Buf.out(b"\x42" * 512), Buf.into(1)])
    f = q.add_chain([header(T_FLUSH), Buf.into(1)])
    drv.notify(0)
    assert q.used_entries() == [(w, 1), (f, 1)]
    assert status_of(drv, w, 2) == S_OK and status_of(drv, f, 1) == S_OK
    assert disk.read_bytes()[5 * 512 : 6 * 512] == b"\x42" * 512
    assert dev.counters["write"] == 1 and dev.counters["flush"] == 1
    dev.close()


def test_read_only_disk_refuses_writes(mem, alloc, disk):
    before = disk.read_bytes()
    dev, _, drv = bring_up(mem, alloc, disk, read_only=True)
    q = drv.queues[0]
    head = q.add_chain([header(T_OUT, 0), Buf.out(b"\x00" * 512), Buf.into(1)])
    drv.notify(0)
    assert status_of(drv, head, 2) == S_IOERR
    assert disk.read_bytes() == before
    dev.close()


def test_get_id_returns_serial(mem, alloc, disk):
    dev, _, drv = bring_up(mem, alloc, disk, serial="vol-123")
    q = drv.queues[0]
    head = q.add_chain([header(T_GET_ID), Buf.into(20), Buf.into(1)])
    drv.notify(0)
    assert q.read_buffer(head, 1) == b"vol-123".ljust(20, b"\0")
    assert status_of(drv, head, 2) == S_OK
    dev.close()


@pytest.mark.parametrize(
    "bufs,expected",
    [
        ([header(T_IN, SECTORS - 1), Buf.into(1024), Buf.into(1)], S_IOERR),  # runs past the end
        ([header(T_IN, 2**60), Buf.into(512), Buf.into(1)], S_IOERR),  # sector * 512 overflows
        ([header(T_DISCARD), Buf.into(1)], S_UNSUPP),
        ([Buf.out(b"short"), Buf.into(1)], S_IOERR),  # header under 16 bytes
    ],
    ids=["past-end", "sector-overflow", "unsupported", "short-header"],
)
def test_bad_requests_fail_with_status(mem, alloc, disk, bufs, expected):
    dev, t, drv = bring_up(mem, alloc, disk)
    q = drv.queues[0]
    head = q.add_chain(bufs)
    drv.notify(0)
    assert q.used_entries() == [(head, 1)]
    assert status_of(drv, head, len(bufs) - 1) == expected
    assert not t.broken  # a bad request is not a broken device
    dev.close()


def test_read_into_device_readable_buffer_is_refused(mem, alloc, disk):
    dev, _, drv = bring_up(mem, alloc, disk)
    q = drv.queues[0]
    head = q.add_chain([header(T_IN, 0), Buf.out(b"\x11" * 512), Buf.into(1)])
    drv.notify(0)
    assert status_of(drv, head, 2) == S_IOERR
    assert q.read_buffer(head, 1) == b"\x11" * 512  # the device never wrote the read-only buffer
    dev.close()


def test_chain_without_writable_status_is_returned_unanswered(mem, alloc, disk):
    dev, t, drv = bring_up(mem, alloc, disk)
    q = drv.queues[0]
    head = q.add_chain([header(T_IN, 0), Buf.out(b"\x11" * 512)])
    drv.notify(0)
    assert q.used_entries() == [(head, 0)]
    assert q.read_buffer(head, 1) == b"\x11" * 512
    assert dev.counters["errors"] == 1
    dev.close()


@pytest.mark.parametrize(
    "write",
    [
        lambda q: q.write_descriptor(0, 1 << 30, 16, F_NEXT, 1),  # header outside RAM
        lambda q: q.write_descriptor(0, 0x8000, 16, F_NEXT, 0),  # loop
        lambda q: q.write_descriptor(0, 0x8000, 0, F_NEXT, 1),  # zero length
        lambda q: (q.write_descriptor(0, 0x8000, 16, F_WRITE | F_NEXT, 2), q.write_descriptor(2, 0x9000, 16)),
    ],
    ids=["outside-ram", "loop", "zero-length", "readable-after-writable"],
)
def test_malformed_chain_puts_device_in_error_state(mem, alloc, disk, write):
    before_disk = disk.read_bytes()
    dev, t, drv = bring_up(mem, alloc, disk)
    q = drv.queues[0]
    write(q)
    q.write_descriptor(1, 0x9000, 1, F_WRITE)
    q.publish(0)
    drv.notify(0)
    assert drv.needs_reset and t.broken and dev.error
    assert drv.rd(0x60) & 2  # configuration-change interrupt
    # further notifies are ignored until the driver resets the device
    q.add_chain([header(T_IN, 0), Buf.into(512), Buf.into(1)])
    drv.notify(0)
    assert q.used_entries() == []
    drv.setup(1)  # reset and renegotiate: the device works again
    q2 = drv.queues[0]
    head = q2.add_chain([header(T_IN, 0), Buf.into(512), Buf.into(1)])
    drv.notify(0)
    assert q2.used_entries() == [(head, 513)] and not t.broken
    assert disk.read_bytes() == before_disk
    dev.close()


def test_features_ok_refused_without_version_1(mem, alloc, disk):
    dev = VirtioBlk(disk)
    drv = MmioDriver(MmioTransport(dev, mem), mem, alloc)
    assert drv.setup(1, features=F_FLUSH) == 0
    dev.close()


def test_exclusive_lock_on_writable_disk(disk):
    first = VirtioBlk(disk)
    with pytest.raises(DiskError, match="in use"):
        VirtioBlk(disk)
    first.close()
    VirtioBlk(disk, read_only=True).close()


def test_missing_disk(tmp_path):
    with pytest.raises(DiskError, match="cannot open"):
        VirtioBlk(tmp_path / "nope.raw")


# ---- empty slots (snapshot templates) --------------------------------------------------------------------------

def _read_sector0(drv):
    q = drv.queues[0]
    head = q.add_chain([header(T_IN, 0), Buf.into(512), Buf.into(1)])
    drv.notify(0)
    return head, q


def test_an_empty_slot_has_no_capacity_and_fails_io(mem, alloc):
    dev = VirtioBlk(None)
    drv = MmioDriver(MmioTransport(dev, mem), mem, alloc)
    drv.setup(1)
    assert not dev.bound and drv.config(0, 8) == 0
    assert not drv.device_features() & F_RO  # negotiated once: a read-only binding is enforced, not advertised
    head, q = _read_sector0(drv)
    assert status_of(drv, head, 2) == S_IOERR


def test_binding_a_slot_announces_the_capacity_and_serves_the_image(mem, alloc, disk):
    dev = VirtioBlk(None)
    transport = MmioTransport(dev, mem)
    drv = MmioDriver(transport, mem, alloc)
    drv.setup(1)
    generation = drv.rd(0xFC)
    dev.bind(disk, read_only=True, serial="msb-disk0")
    transport.config_changed()
    assert drv.rd(0x60) & 2 and drv.rd(0xFC) == generation + 1  # the driver re-reads the config
    assert drv.config(0, 8) == SECTORS and dev.serial == b"msb-disk0"
    head, q = _read_sector0(drv)
    assert q.read_buffer(head, 1) == disk.read_bytes()[:512] and status_of(drv, head, 2) == S_OK
    write = q.add_chain([header(T_OUT, 0), Buf.out(b"x" * 512), Buf.into(1)])
    drv.notify(0)
    assert status_of(drv, write, 2) == S_IOERR  # a read-only binding of a writable-looking slot
    with pytest.raises(DiskError, match="already holds"):
        dev.bind(disk)
    dev.close()


def test_a_slot_restored_from_saved_state_is_bound_afterwards(mem, alloc, disk):
    """What a restored template does: the transport state of an empty slot, then the sandbox's disk."""
    saved_dev = VirtioBlk(None)
    saved = MmioTransport(saved_dev, mem)
    drv = MmioDriver(saved, mem, alloc)
    drv.setup(1)
    state = saved.state()
    dev = VirtioBlk(None)
    restored = MmioTransport(dev, mem)
    restored.set_state(state)
    drv.t = restored
    dev.bind(disk, serial="msb-disk1")
    restored.config_changed()
    head, q = _read_sector0(drv)
    assert q.read_buffer(head, 1) == disk.read_bytes()[:512] and status_of(drv, head, 2) == S_OK
    dev.close()
