"""Snapshot a real kernel mid-boot and restore it (a ``vm`` test: the nested rig runs it without hardware KVM).

One boot to the virtio-blk probe of an empty disk slot, a snapshot there; the original resumes and goes on to
``Run /init`` (the uninterrupted reference), then two fresh processes restore the snapshot side by side and must
reach the same point without booting again, sharing the snapshot's unchanged pages. Each binds an image to the
empty slot after the restore, as a sandbox binds its volumes to a template's slots: the restored kernel must take
the new capacity from the configuration interrupt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _vmcore.kernels import find_kernel
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.snapshot import MEMORY
from tests.support.smaps import mapping_usage
from tests.timeouts import BOOT, scaled
from tests.vmcore.guestimage import build_root_image
from tests.vmcore.test_kernel_boot import INIT_C, MARKER

pytestmark = [pytest.mark.vm, pytest.mark.kernel_boot]

PAUSE_AT = r"virtio_blk virtio2: \[vdb\] 0 512-byte logical blocks"  # the empty slot, probed
INIT_LINE = "Run /init as init process"
CMDLINE_EXTRA = "root=/dev/vda ro rootfstype=ext4 init=/init"
ROOT = Path(__file__).resolve().parents[2]
# What the rest of the boot must print after the pause point, in this order, whoever runs it.
MILESTONES = ("EXT4-fs (vda): mounted filesystem", "VFS: Mounted root (ext4 filesystem) readonly", INIT_LINE)


SLOT_SECTORS = 128
SLOT_BOUND = (rf"\[vdb\] new size: {SLOT_SECTORS} 512-byte logical blocks",
              rf"vdb: detected capacity change from 0 to {SLOT_SECTORS}")


def machine_config(kernel: str, image: Path) -> MachineConfig:
    return MachineConfig(kernel=kernel, memory_mib=256, cmdline_extra=CMDLINE_EXTRA,
                         disks=[Disk(str(image), read_only=True, serial="rootfs"), Disk(None)])


def _milestones_in_order(text: str) -> list[str]:
    found, pos = [], 0
    for m in MILESTONES:
        i = text.find(m, pos)
        if i < 0:
            break
        found.append(m)
        pos = i
    return found


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory):
    work = tmp_path_factory.mktemp("snapboot")
    image = build_root_image(work, INIT_C)
    kernel = str(find_kernel().path)
    snap = work / "snap"
    m = Machine(machine_config(kernel, image))
    try:
        m.start()
        m.wait_for_console(PAUSE_AT, timeout=BOOT)
        m.snapshot(snap)
        at_pause = m.console.text()
        m.resume()  # the uninterrupted reference: the same guest goes on from where the snapshot was taken
        m.wait_for_console(INIT_LINE, timeout=BOOT)
        reference = m.console.text()[len(at_pause):]
        assert m.device_errors == []
    finally:
        m.close()
    return {"snapshot": snap, "kernel": kernel, "image": image, "at_pause": at_pause, "reference": reference}


def _spawn(snapshotted: dict, index: int) -> subprocess.Popen:
    slot_image = snapshotted["snapshot"].parent / f"slot{index}.raw"
    slot_image.write_bytes(bytes(SLOT_SECTORS * 512))
    args = {"snapshot": str(snapshotted["snapshot"]), "kernel": snapshotted["kernel"], "memory_mib": 256,
            "disks": [str(snapshotted["image"]), None], "cmdline_extra": CMDLINE_EXTRA,
            "bind_disks": [[1, str(slot_image), f"msb-disk{index}"]],
            "until": MARKER, "also": SLOT_BOUND,
            "timeout": BOOT}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "tests.vmcore.snapshot_child", json.dumps(args)], cwd=ROOT,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_restores(snapshotted):
    """Two fresh processes restored from the one snapshot, both alive when their smaps are read."""
    procs = [_spawn(snapshotted, i) for i in range(2)]
    try:
        results = [json.loads(p.stdout.readline() or '{"error": "child died"}') for p in procs]
        usage = [mapping_usage(p.pid, "/" + MEMORY) if p.poll() is None else None for p in procs]
        yield results, usage
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_reference_boot_reaches_init_after_pause(snapshotted):
    assert re.search(PAUSE_AT, snapshotted["at_pause"])
    assert not re.search(SLOT_BOUND[0], snapshotted["reference"])  # nobody bound the original's slot
    assert INIT_LINE not in snapshotted["at_pause"]
    assert _milestones_in_order(snapshotted["reference"]) == list(MILESTONES)


def test_restored_machines_go_on_to_init_without_booting_again(snapshotted, two_restores):
    results, _ = two_restores
    for r in results:
        assert "error" not in r, r.get("error")
        console = r["console"]
        assert _milestones_in_order(console) == list(MILESTONES), console[-2000:]
        assert "Linux version" not in console  # it went on from the snapshot, it did not boot
        assert not re.search(PAUSE_AT, console)
        assert r["disk_reads"][0] > 0  # root was read through the restored virtio-blk queue
        for pattern in SLOT_BOUND:  # the slot bound after the restore: the guest saw its new capacity
            assert re.search(pattern, console), console[-2000:]
        assert r["device_errors"] == []
        assert MARKER in console  # the restored guest's /init ran


def test_restored_machines_share_unchanged_pages(two_restores):
    _, usage = two_restores
    assert all(u is not None and u["count"] == 1 for u in usage), usage
    for u in usage:
        shared = u["Shared_Clean"] + u["Shared_Dirty"]
        assert shared > 1024, u  # KiB of the snapshot's pages mapped by both processes at once
        assert u["Pss"] < u["Rss"], u
