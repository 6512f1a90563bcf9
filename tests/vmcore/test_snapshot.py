"""Snapshot and restore with the trivial counting guest (fast; guest kernel mode, so kvm_pvm is enough), and the
refusal of corrupted or mismatched snapshots with ``SnapshotError``."""

from __future__ import annotations

import json
import shutil
import string

import pytest

from _vmcore import snapshot as snapfmt
from _vmcore.errors import SnapshotError, VmmError
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.machine import Disk, Machine, MachineConfig
from tests.support.smaps import mapping_usage
from tests.support.tinyguest import counting_code, tiny_guest_elf

KVM = detect_kvm()
pytestmark = pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")
LAST = "f"
ALPHABET = string.ascii_lowercase[: string.ascii_lowercase.index(LAST) + 1]


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    work = tmp_path_factory.mktemp("snapguest")
    kernel = work / "count.elf"
    kernel.write_bytes(tiny_guest_elf(counting_code(LAST, delay=0x40000)))
    disk = work / "disk.raw"
    disk.write_bytes(bytes(1 << 16))
    return work, kernel, disk


def _config(guest, **overrides) -> MachineConfig:
    _, kernel, disk = guest
    kwargs = dict(kernel=str(kernel), memory_mib=32, disks=[Disk(str(disk), read_only=True)],
                  console_ports=("agent",))
    kwargs.update(overrides)
    return MachineConfig(**kwargs)


@pytest.fixture(scope="module")
def snap(guest):
    """A snapshot taken after the guest printed 'b'; the original then resumed to the end."""
    work, _, _ = guest
    path = work / "snap"
    with Machine(_config(guest)) as m:
        m.start()
        m.wait_for_console("b", timeout=60)
        m.snapshot(path)
        assert m.paused
        before = m.console.text()
        m.resume()
        assert m.wait(timeout=60) == "reset"
        resumed = m.console.text()
    return path, before, resumed


def test_pause_and_resume_lose_nothing(snap):
    _, before, resumed = snap
    assert before.startswith("ab") and ALPHABET.startswith(before)
    assert resumed == ALPHABET


def test_restore_goes_on_from_the_snapshot(snap, guest):
    path, before, _ = snap
    with Machine.restore(path, _config(guest)) as m:
        m.start()
        assert m.wait(timeout=60) == "reset"
        assert before + m.console.text() == ALPHABET
        assert m.device_errors == []
        assert m.transports[1].status == 0  # the guest never drove the disk: restored as it was


def test_snapshot_files_and_manifest(snap):
    path, _, _ = snap
    manifest = json.loads((path / snapfmt.MANIFEST).read_text())
    assert manifest["format"] == snapfmt.FORMAT and manifest["version"] == snapfmt.VERSION
    ident = manifest["identity"]
    assert ident["memory_mib"] == 32 and ident["vcpus"] == 1
    assert [d["class"] for d in ident["devices"]] == ["VirtioConsole", "VirtioBlk"]
    console, disk = ident["devices"]  # each device's identity(): the base's fields and what its driver saw at probe
    assert console["ports"] == ["", "agent"] and console["device_id"] == 3 and len(console["queues"]) == 6
    assert (disk["capacity"], disk["read_only"], disk["device_id"], disk["queues"]) == (128, True, 2, [256])
    assert set(disk) == {"class", "device_id", "features", "queues", "capacity", "read_only"}
    assert (path / snapfmt.MEMORY).stat().st_size == 32 << 20
    assert (path / snapfmt.MEMORY).stat().st_blocks * 512 < 4 << 20  # zero runs are holes
    state = snapfmt.read_snapshot(path).state
    assert len(state["irqchip"]) == 3 and state["clock"] > 0
    assert {i for i, _ in state["vcpus"][0]["msrs"]} >= {0x10, 0x1A0}


def test_two_restores_share_the_memory_file(snap, guest):
    path, before, _ = snap
    with Machine.restore(path, _config(guest)) as a, Machine.restore(path, _config(guest)) as b:
        a.start()
        b.start()
        assert a.wait(timeout=60) == "reset" and b.wait(timeout=60) == "reset"
        usage = mapping_usage("self", str(path / snapfmt.MEMORY))
        assert usage["count"] == 2
        assert usage["Shared_Clean"] > 0 and usage["Pss"] < usage["Rss"], usage
        assert before + a.console.text() == before + b.console.text() == ALPHABET


def test_restore_refuses_machine_mismatch(snap, guest, tmp_path):
    path, _, _ = snap
    other_kernel = tmp_path / "other.elf"
    other_kernel.write_bytes(tiny_guest_elf(counting_code("c", delay=0x40000)))
    other_disk = tmp_path / "big.raw"
    other_disk.write_bytes(bytes(1 << 17))
    for overrides, field in [({"memory_mib": 64}, "memory_mib"), ({"vcpus": 2}, "vcpus"),
                             ({"kernel": str(other_kernel)}, "kernel_sha256"),
                             ({"disks": [Disk(str(other_disk), read_only=True)]}, "devices"),
                             ({"console_ports": ()}, "devices"), ({"cmdline_extra": "quiet"}, "cmdline")]:
        m = Machine.restore(path, _config(guest, **overrides))
        with pytest.raises(SnapshotError, match=field):
            m.start()
        m.close()


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("damage, match", [
    (lambda p: (p / snapfmt.MANIFEST).unlink(), "no snapshot"),
    (lambda p: (p / snapfmt.MANIFEST).write_text("{"), "unreadable"),
    (lambda p: (p / snapfmt.MANIFEST).write_text(
        (p / snapfmt.MANIFEST).read_text().replace(f'"version": {snapfmt.VERSION}', '"version": 99')), "version 99"),
    (lambda p: (p / snapfmt.MANIFEST).write_text(
        (p / snapfmt.MANIFEST).read_text().replace(f'"{snapfmt.FORMAT}"', '"another-snapshot"')), "not a vmcore"),
    (lambda p: (p / snapfmt.MEMORY).write_bytes(b"x"), "memory.bin is 1 bytes"),
    (lambda p: _flip(p / snapfmt.MEMORY, 0x100000), "memory.bin .* corrupted"),
    (lambda p: _flip(p / snapfmt.STATE, 10), "state.json .* corrupted"),
], ids=["no-manifest", "bad-json", "other-version", "other-format", "truncated-memory", "flipped-memory",
        "flipped-state"])
def test_corrupted_snapshot_is_refused(snap, guest, tmp_path, damage, match):
    bad = _copy(snap[0], tmp_path / "bad")
    damage(bad)
    with pytest.raises(SnapshotError, match=match):
        Machine.restore(bad, _config(guest))


def test_memory_written_after_the_snapshot_is_refused_without_hashing(snap, guest, tmp_path):
    """A restore that skips hashing the memory (a template's later restores) still sees it was written to."""
    kept = tmp_path / "kept"
    shutil.copytree(snap[0], kept)  # copy2: mtimes kept, so the copy restores as the original would
    Machine.restore(kept, _config(guest), verify_memory=False).close()
    _flip(kept / snapfmt.MEMORY, 0x100000)
    with pytest.raises(SnapshotError, match="memory.bin .* modified after"):
        Machine.restore(kept, _config(guest), verify_memory=False)


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_snapshot_error_is_a_vmm_error():
    assert issubclass(SnapshotError, VmmError)


def test_pause_needs_a_running_machine(guest):
    with Machine(_config(guest)) as m:
        with pytest.raises(VmmError, match="running"):
            m.pause()
        with pytest.raises(VmmError, match="not paused"):
            m.resume()


def test_restore_with_two_vcpus(guest, tmp_path):
    """The second vCPU waits for INIT/SIPI; its MP state, LAPIC and the I/O APIC come back as they were."""
    with Machine(_config(guest, vcpus=2)) as m:
        m.start()
        m.wait_for_console("a", timeout=60)
        m.snapshot(tmp_path / "snap2")
        before = m.console.text()
    with Machine.restore(tmp_path / "snap2", _config(guest, vcpus=2)) as r:
        r.start()
        assert r.wait(timeout=60) == "reset"
        assert before + r.console.text() == ALPHABET


def test_snapshot_waits_for_host_input_being_delivered(guest, tmp_path):
    """Host input reaches guest memory on the console's own threads, under its lock: a snapshot holds that lock
    too, so it never copies memory with input half written."""
    import threading

    with Machine(_config(guest)) as m:
        m.start()
        m.wait_for_console("b", timeout=60)
        done = threading.Event()
        with m.console_device.lock:  # as a host-input thread delivering bytes would
            worker = threading.Thread(target=lambda: (m.snapshot(tmp_path / "s"), done.set()))
            worker.start()
            assert not done.wait(0.5)
        worker.join(30)
        assert done.is_set() and (tmp_path / "s" / snapfmt.MANIFEST).is_file()


def test_a_files_digest_is_remembered_per_version_of_the_file(tmp_path, monkeypatch) -> None:
    """Every VMM process keys its template by the kernel's digest: with a memo directory it is hashed once per
    version of the file, not once per process; any change to the file is a new version."""
    import hashlib
    import os

    from _vmcore import snapshot

    kernel, memo = tmp_path / "kernel", tmp_path / "digests"
    kernel.write_bytes(b"k" * 100_000)
    real = hashlib.sha256(kernel.read_bytes()).hexdigest()
    assert snapshot.file_sha256(str(kernel), memo) == real
    [entry] = memo.iterdir()
    monkeypatch.setattr(snapshot, "_file_digests", {})  # a fresh process
    entry.write_text("f" * 64)  # (what a later process finds is what it uses: proof that it did not hash)
    assert snapshot.file_sha256(str(kernel), memo) == "f" * 64
    monkeypatch.setattr(snapshot, "_file_digests", {})
    with open(kernel, "ab") as f:
        f.write(b"!")  # a new version: new size, mtime and ctime
    assert snapshot.file_sha256(str(kernel), memo) == hashlib.sha256(kernel.read_bytes()).hexdigest()
    for garbage in (b"not a digest", b"F" * 64, b"0" * 63):  # a damaged memo is ignored, never trusted
        for e in memo.iterdir():
            e.write_bytes(garbage)
        monkeypatch.setattr(snapshot, "_file_digests", {})
        assert snapshot.file_sha256(str(kernel), memo) == hashlib.sha256(kernel.read_bytes()).hexdigest()
    os.chmod(memo, 0o500)  # a memo that cannot be written only costs the hashing
    try:
        monkeypatch.setattr(snapshot, "_file_digests", {})
        kernel.write_bytes(b"other")
        assert snapshot.file_sha256(str(kernel), memo) == hashlib.sha256(b"other").hexdigest()
    finally:
        os.chmod(memo, 0o700)
