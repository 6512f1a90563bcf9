"""The virtio-fs device behind the VMM's virtio-mmio transport, driven by its guest-driver harness.

Needs the VMM's virtio layer and harness (``_vmcore.devices``, ``tests/vmcore/harness.py``): skipped without them.
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

harness = pytest.importorskip("tests.vmcore.harness", reason="the VMM's guest-driver harness is not here")
pytest.importorskip("_vmcore.devices.virtio_mmio", reason="the VMM's virtio layer is not here")

from fuse_wire import OP, ROOT, Reply, parse, request  # noqa: E402, I001 - ruff's first-party set differs by branch

from _vmcore.devices.virtio_fs import VirtioFs  # noqa: E402
from _vmcore.devices.virtio_mmio import MmioTransport  # noqa: E402
from _vmcore.fs import FuseServer  # noqa: E402
from _vmcore.memory import GuestMemory  # noqa: E402

MEM_SIZE = 4 << 20
Buf = harness.Buf


class FsDriver:
    """The guest's virtio-fs driver, reduced to what the tests need."""

    def __init__(self, dev: VirtioFs, mem: GuestMemory) -> None:
        self.mmio = harness.MmioDriver(MmioTransport(dev, mem), mem, harness.Allocator(0x1000, MEM_SIZE))
        assert self.mmio.setup(queue_count=1 + dev.request_queues, queue_size=16)

    def call(self, raw: bytes, reply_size: int, queue: int = 1) -> Reply | None:
        q = self.mmio.queues[queue]
        split = [Buf.out(raw[:40])] + ([Buf.out(raw[40:])] if len(raw) > 40 else [])
        room = [Buf.into(16)] + ([Buf.into(reply_size)] if reply_size else [])
        head = q.add_chain(split + room)
        self.mmio.notify(queue)
        (got, used), = q.used_entries()
        assert got == head
        if used == 0:
            return None
        data = b"".join(q.read_buffer(head, i) for i in range(len(split), len(split) + len(room)))
        return parse(data[:used])


@pytest.fixture
def share(tmp_path: Path) -> Path:
    (tmp_path / "f").write_bytes(b"through the ring")
    return tmp_path


@pytest.fixture
def mem():
    m = GuestMemory(MEM_SIZE)
    yield m
    m.close()


def test_config_space_holds_the_tag(share: Path, mem: GuestMemory) -> None:
    dev = VirtioFs(FuseServer(share), "myvol", request_queues=2)
    drv = FsDriver(dev, mem)
    tag = bytes(drv.mmio.config(i, 1) for i in range(36))
    assert tag.rstrip(b"\0") == b"myvol" and drv.mmio.config(36, 4) == 2
    assert dev.device_id == 26 and len(dev.queues) == 3
    with pytest.raises(ValueError):
        VirtioFs(FuseServer(share), "x" * 37)


def test_requests_through_the_queues(share: Path, mem: GuestMemory) -> None:
    dev = VirtioFs(FuseServer(share), "share0")
    drv = FsDriver(dev, mem)
    init = drv.call(request(OP["INIT"], 0, struct.pack("<IIII", 7, 38, 131072, 0) + bytes(48)), 64)
    assert init is not None and init.error == 0
    entry = drv.call(request(OP["LOOKUP"], ROOT, b"f\0"), 128)
    assert entry is not None and entry.error == 0
    nodeid = struct.unpack_from("<Q", entry.body)[0]
    opened = drv.call(request(OP["OPEN"], nodeid, struct.pack("<II", 0, 0)), 16)
    fh = struct.unpack_from("<Q", opened.body)[0]
    read = drv.call(request(OP["READ"], nodeid, struct.pack("<QQIIQII", fh, 0, 4096, 0, 0, 0, 0)), 4096)
    assert read.body == b"through the ring"
    assert drv.call(request(OP["LOOKUP"], ROOT, b"..\0"), 128).error == -errno.EINVAL
    assert drv.call(request(99, ROOT), 0).error == -errno.ENOSYS
    assert drv.call(request(OP["LOOKUP"], ROOT, b"f\0", length=4096), 128).error == -errno.EINVAL
    assert drv.call(request(OP["FORGET"], nodeid, struct.pack("<Q", 2)), 0, queue=0) is None   # hiprio
    assert dev.server.inode_count == 1 and not drv.mmio.needs_reset
    drv.mmio.wr(harness.STATUS, 0)          # a driver reset: the server forgets everything, INIT comes again
    assert dev.server.handle_count == 0


def test_a_slot_bound_late(share: Path, mem: GuestMemory) -> None:
    dev = VirtioFs(None, "slot0")
    drv = FsDriver(dev, mem)
    init = request(OP["INIT"], 0, struct.pack("<IIII", 7, 38, 131072, 0) + bytes(48))
    assert drv.call(init, 64).error == -errno.ENODEV                 # nothing bound: the mount would fail
    assert drv.call(request(OP["FORGET"], 5, struct.pack("<Q", 1)), 0, queue=0) is None
    dev.bind(FuseServer(share))
    assert drv.call(init, 64).error == 0
    assert drv.call(request(OP["LOOKUP"], ROOT, b"f\0"), 128).error == 0
    assert dev.unbind() is not None
    assert drv.call(request(OP["LOOKUP"], ROOT, b"f\0"), 128).error == -errno.ENODEV


def test_a_slot_restored_from_saved_state_then_bound(share: Path, mem: GuestMemory) -> None:
    """What a restored template does: the empty slot's transport state saved after the driver probed it, a fresh
    device restored from it, then the sandbox's share bound; the guest's first mount goes through."""
    drv = FsDriver(VirtioFs(None, "msb-fs0"), mem)
    state = drv.mmio.t.state()
    dev = VirtioFs(None, "msb-fs0")
    restored = MmioTransport(dev, mem)
    restored.set_state(state)
    drv.mmio.t = restored
    dev.bind(FuseServer(share))
    init = request(OP["INIT"], 0, struct.pack("<IIII", 7, 38, 131072, 0) + bytes(48))
    assert drv.call(init, 64).error == 0
    assert drv.call(request(OP["LOOKUP"], ROOT, b"f\0"), 128).error == 0
