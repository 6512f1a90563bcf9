"""The vm backend's snapshot templates, on the VMM side: the slot layout, binding a restored clone's slots, the
agent's ready point (spoken by the real agent, natively), and a broken template rebuilt rather than booted.

Machines here run the tiny test guest (``tests.support.tinyguest``): any /dev/kvm, kvm_pvm included, runs it. The
whole path with libkrunfw's kernel and our agent as PID 1 is in the ``vm`` tests of test_sandbox_lifecycle.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from _vmcore.errors import SnapshotError, VmmError
from _vmcore.fs.server import FuseServer
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.snapshot import STATE
from _vmcore.template_cache import TemplateCache
from pytest_microsandbox.agent._wire import HEADER, HEADER_SIZE, Msg
from pytest_microsandbox.vmm.spec import MAX_DEVICES, ROOT_SERIAL, DiskSpec, ShareSpec, VmSpec
from pytest_microsandbox.vmm.template import (
    DISK_SLOTS,
    SlotLayout,
    ask_hello,
    restore_clone,
    template_key,
    wait_for_announcement,
)
from tests.support.tinyguest import counting_code, tiny_guest_elf

KVM = detect_kvm()
needs_kvm = pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")


def _spec(tmp_path: Path, disks: int = 0, shares: int = 0, root: bool = True) -> VmSpec:
    entries = [DiskSpec(str(tmp_path / "root.ext4"), read_only=True, serial=ROOT_SERIAL)] if root else []
    for i in range(disks):
        image = tmp_path / f"d{i}.raw"
        image.write_bytes(bytes(1 << 16))
        entries.append(DiskSpec(str(image), read_only=i % 2 == 1, serial=f"msb-disk{i}"))
    share_list = []
    for i in range(shares):
        (tmp_path / f"share{i}").mkdir(exist_ok=True)
        share_list.append(ShareSpec(f"msb-fs{i}", str(tmp_path / f"share{i}"), readonly=False))
    (tmp_path / "root.ext4").write_bytes(bytes(1 << 16))
    return VmSpec(memory_mib=32, cpus=1, kernel=None, console_log=str(tmp_path / "console.log"),
                  disks=tuple(entries), shares=tuple(share_list))


def test_layout_fills_the_irq_lines(tmp_path):
    with_root = SlotLayout.for_spec(_spec(tmp_path))
    assert (with_root.root_disks, with_root.disk_slots) == (1, DISK_SLOTS)
    assert 1 + with_root.root_disks + with_root.disk_slots + with_root.fs_slots == MAX_DEVICES
    host_image = SlotLayout.for_spec(_spec(tmp_path, root=False))
    assert host_image.fs_slots == with_root.fs_slots + 1  # the host image's root is a share


def test_a_sandbox_that_does_not_fit_boots_cold(tmp_path):
    assert SlotLayout.for_spec(_spec(tmp_path, disks=DISK_SLOTS + 1)) is None
    fs_slots = SlotLayout.for_spec(_spec(tmp_path)).fs_slots
    assert SlotLayout.for_spec(_spec(tmp_path, shares=fs_slots)) is not None
    assert SlotLayout.for_spec(_spec(tmp_path, shares=fs_slots + 1)) is None


def test_template_config_and_key_do_not_depend_on_the_sandboxs_volumes(tmp_path):
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(tiny_guest_elf(counting_code("a")))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = _spec(tmp_path / "a", disks=1, shares=2), _spec(tmp_path / "b", disks=3)
    configs = [SlotLayout.for_spec(s).machine_config(s, str(kernel), b"initramfs", "x=1") for s in (one, two)]
    assert [d.path is None for d in configs[0].disks] == [False] + [True] * DISK_SLOTS
    assert [d.tag for d in configs[0].shares] == [f"msb-fs{i}" for i in range(len(configs[0].shares))]
    assert all(d.server is None for d in configs[0].shares) and configs[0].extra_devices == []
    keys = [template_key(c, "sha256:abc") for c in configs]
    assert keys[0] == keys[1]
    assert template_key(configs[0], "sha256:def") != keys[0]  # another image, another template


@pytest.fixture
def agent():
    """The real agent, natively, on a socketpair: it announces itself and answers HELLO as PID 1 would."""
    from tests.agent.agent_harness import AGENT

    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([str(AGENT), "--fd", str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    yield ours
    ours.close()
    proc.wait(10)


def _frame_type(frame: bytes) -> int:
    version, kind, _, stream, length = HEADER.unpack_from(frame)
    assert (version, stream, len(frame)) == (1, 0, HEADER_SIZE + length)
    return kind


def test_ready_point_is_the_agents_announcement_then_hello_again(agent):
    assert _frame_type(wait_for_announcement(agent, 10)) == Msg.HELLO_REPLY
    assert _frame_type(ask_hello(agent, 10)) == Msg.HELLO_REPLY  # what a restored clone's host is handed
    assert agent.gettimeout() is None  # blocking again: the relay's sendall must not time out on a slow guest


def test_announcement_after_tty_echo_and_timeout():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"\x01\x04echoed garbage")
        with pytest.raises(VmmError, match="did not announce"):
            wait_for_announcement(a, 0.2)
        b.close()
        with pytest.raises(VmmError, match="closed"):
            wait_for_announcement(a, 5)


# ---- machines with slots (tiny guest) ---------------------------------------------------------------------------

def _tiny_config(tmp_path: Path, share_tag: str = "msb-fs0") -> MachineConfig:
    from _vmcore.devices.virtio_fs import VirtioFs

    kernel = tmp_path / "count.elf"
    if not kernel.exists():
        kernel.write_bytes(tiny_guest_elf(counting_code("f", delay=0x40000)))
    return MachineConfig(kernel=str(kernel), memory_mib=32, disks=[Disk(None), Disk(None)],
                         console_ports=("agent",), shares=[VirtioFs(None, share_tag)])


@needs_kvm
def test_bind_slots_of_a_running_machine(tmp_path):
    image = tmp_path / "d.raw"
    image.write_bytes(bytes(1 << 16))
    (tmp_path / "share").mkdir()
    with Machine(_tiny_config(tmp_path)) as m:
        m.start()
        m.bind_disk(1, str(image), read_only=True, serial="msb-disk0")
        blk = m.disks[1]
        transport = m.transports[2]  # console, disk slot 0, disk slot 1
        assert (blk.capacity, blk.serial, transport.config_generation) == (128, b"msb-disk0", 1)
        assert transport.interrupt_status & 2 and m.disks[0].capacity == 0
        server = FuseServer(str(tmp_path / "share"))
        m.bind_share("msb-fs0", server)
        with pytest.raises(VmmError, match="already bound"):
            m.bind_share("msb-fs0", server)
        with pytest.raises(VmmError, match="no virtio-fs slot"):
            m.bind_share("msb-fs9", server)
        with pytest.raises(VmmError, match="no disk slot 5"):
            m.bind_disk(5, str(image))


def _tiny_build(make_config, directory: Path, timeout: float) -> None:
    with Machine(make_config()) as m:
        m.start()
        m.wait_for_console("b", timeout=timeout)
        m.snapshot(directory)


@needs_kvm
def test_a_share_slot_of_another_tag_is_another_machine(tmp_path):
    """The guest's driver read the slot's tag at probe: the tag is part of the share's identity, and so of the
    snapshot's (and of the template's key)."""
    _tiny_build(lambda: _tiny_config(tmp_path), tmp_path / "snap", 60)
    machine = Machine.restore(tmp_path / "snap", _tiny_config(tmp_path, share_tag="msb-fs9"))
    with pytest.raises(SnapshotError, match="another machine \\(devices: "):
        machine.start()
    machine.close()
    assert template_key(_tiny_config(tmp_path), "tiny") != template_key(_tiny_config(tmp_path, "msb-fs9"), "tiny")


@needs_kvm
def test_clone_is_restored_bound_and_a_corrupted_template_rebuilt(tmp_path):
    builds = []

    def build(make_config, directory, timeout):
        builds.append(directory)
        _tiny_build(make_config, directory, timeout)

    image = tmp_path / "d.raw"
    image.write_bytes(bytes(1 << 16))
    cache = TemplateCache(tmp_path / "snapshots")
    key = template_key(_tiny_config(tmp_path), "tiny")

    def clone():
        return restore_clone(cache, key, lambda: _tiny_config(tmp_path), 60,
                             lambda m: m.bind_disk(0, str(image), serial="msb-disk0"), build=build,
                             hello=lambda sock, timeout: b"hello")

    machine, hello = clone()
    with machine:
        assert hello == b"hello" and machine.disks[0].serial == b"msb-disk0"
        assert machine.wait(60) == "reset"  # the tiny guest counts on from 'b' to its end
        assert machine.console.text().startswith("c")
    assert len(builds) == 1
    state = cache.path_for(key) / STATE
    state.write_bytes(state.read_bytes().replace(b'"status"', b'"stat0s"', 1))  # same size, bad checksum
    machine, _ = clone()
    with machine:
        assert machine.wait(60) == "reset"
    assert len(builds) == 2  # refused, dropped and built again: the broken one never ran


@pytest.mark.skipif(KVM.runs_guest_userspace, reason="the agent announces itself here: the vm tests cover this")
@pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")
def test_vmm_process_reports_a_template_whose_agent_never_came_up(tmp_path):
    """The VMM process's template path with libkrunfw's kernel, where no guest user program can run (kvm_pvm): the
    template machine (nine devices: the console, three disk slots, five virtio-fs slots) starts booting, its agent
    never announces itself, and the process says so and exits, leaving no half-built template behind. (The kernel
    is still far from its virtio console after these 10 s here, so the console log stays empty.)"""
    from pytest_microsandbox.sandbox._zygote_client import Zygote

    spec = VmSpec(memory_mib=256, cpus=1, kernel=None, console_log=str(tmp_path / "console.log"),
                  snapshots=str(tmp_path / "snapshots"), image_digest="host", boot_timeout=10)
    zygote = Zygote()
    ours, theirs = socket.socketpair()
    try:
        with ours, theirs, open(spec.console_log, "ab") as log:
            vmm = zygote.spawn(spec, theirs, log.fileno())
        assert vmm.ended(120)
    finally:
        zygote.close()
    console = Path(spec.console_log).read_text()
    assert "msb-vmm: jailed: own mount namespace" in console
    assert "msb-vmm: booting snapshot template " in console  # the console log says which, before the boot
    assert "building a template: the agent did not announce itself within 10 s" in console
    memo = TemplateCache(tmp_path / "snapshots").digest_memo  # the kernel's digest, kept for the next process
    assert [p.name for p in (tmp_path / "snapshots").iterdir() if p.is_dir() and p != memo] == []


@needs_kvm
def test_a_template_evicted_between_lookup_and_restore_is_built_again(tmp_path, monkeypatch):
    """Another process's build may evict the template this one just found: its memory file is gone by the time the
    restore maps it. That is a SnapshotError (never a half-restored machine), and the clone builds it again."""
    import shutil

    from pytest_microsandbox.vmm import template as _template

    builds, lines = [], []

    def build(make_config, directory, timeout):
        builds.append(directory)
        _tiny_build(make_config, directory, timeout)

    cache = TemplateCache(tmp_path / "snapshots")
    key = template_key(_tiny_config(tmp_path), "tiny")
    cache.get_or_build(key, lambda d: build(lambda: _tiny_config(tmp_path), d, 60))
    real_restore = Machine.restore

    def restore_then_evicted(path, config, verify_memory=True):
        machine = real_restore(path, config, verify_memory=verify_memory)
        if len(builds) == 1:
            shutil.rmtree(path)
        return machine

    monkeypatch.setattr(_template.Machine, "restore", restore_then_evicted)
    machine, _ = restore_clone(cache, key, lambda: _tiny_config(tmp_path), 60, lambda m: None, build=build,
                               hello=lambda sock, timeout: b"hello", report=lines.append)
    with machine:
        assert machine.wait(60) == "reset"
    assert len(builds) == 2
    name = cache.path_for(key).name
    assert lines == [f"booting snapshot template {name} for this configuration", f"restored snapshot template {name}"]
