"""Snapshot templates of vm sandboxes, on the VMM process's side: the first sandbox of a configuration boots a
machine with empty device slots and snapshots it once its agent is up; every later one restores that snapshot and
fills the slots with its own shares and disks.

Layout of a template machine (``MAX_DEVICES`` virtio-mmio devices: the IRQ lines of ``_vmcore.layout``):

    the agent's console | the image's root disk (bound: the image is part of the key) | DISK_SLOTS empty disks |
    virtio-fs slots msb-fs0.. (the rest)

The key is ``_vmcore.template_cache.config_key`` of that layout plus the image's digest and the ready point, so a
new kernel, agent (initramfs), image, memory size or vCPU count makes a new template. The ready point is the
agent's announcement on its port: the agent is PID 1, its port raw, waiting for BOOT, nothing mounted yet. A
restored clone gets its hostname, mounts, entropy and clock from that BOOT (``Guest.boot_config``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _vmcore.errors import SnapshotError, VmmError
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.template_cache import TemplateCache, config_key
from pytest_microsandbox.agent._wire import (
    ANNOUNCEMENT_HEADER,
    PROTO_VERSION,
    Msg,
    Tag,
    encode_fields,
    encode_frame,
    frame_size,
)
from pytest_microsandbox.vmm.spec import AGENT_PORT, MAX_DEVICES, ROOT_SERIAL, ShareSpec, VmSpec

DISK_SLOTS = 3
READY = "agent-announced"


@dataclass(frozen=True)
class SlotLayout:
    root_disks: int  # 0 (the host image: its root is a share) or 1
    disk_slots: int
    fs_slots: int

    @classmethod
    def for_spec(cls, spec: VmSpec) -> SlotLayout | None:
        """The template layout that can hold this sandbox's devices, or None when they do not fit (cold boot)."""
        root_disks = sum(1 for d in spec.disks if d.serial == ROOT_SERIAL)
        fs_slots = MAX_DEVICES - 1 - root_disks - DISK_SLOTS
        if len(spec.disks) - root_disks > DISK_SLOTS or len(spec.shares) > fs_slots:
            return None
        return cls(root_disks, DISK_SLOTS, fs_slots)

    def machine_config(self, spec: VmSpec, kernel: str, initramfs: bytes, cmdline_extra: str,
                       kvm_kind: str | None = None) -> MachineConfig:
        from _vmcore.devices.virtio_fs import VirtioFs

        root = [Disk(d.path, read_only=True, serial=ROOT_SERIAL) for d in spec.disks if d.serial == ROOT_SERIAL]
        return MachineConfig(
            kernel=kernel, memory_mib=spec.memory_mib, vcpus=spec.cpus, initramfs=initramfs,
            disks=root + [Disk(None)] * self.disk_slots, console_ports=(AGENT_PORT,),
            shares=[VirtioFs(None, f"msb-fs{i}") for i in range(self.fs_slots)],
            cmdline_extra=cmdline_extra, console_log=spec.console_log, kvm_kind=kvm_kind)

    def bind(self, machine: Machine, spec: VmSpec, make_server: Callable[[ShareSpec], object]) -> None:
        """Fill the slots: the sandbox's disks in order (their serials are what the agent mounts by), its shares by
        tag (``vm_spec`` numbers them from msb-fs0)."""
        disks = [d for d in spec.disks if d.serial != ROOT_SERIAL]
        for slot, d in enumerate(disks, start=self.root_disks):
            machine.bind_disk(slot, d.path, read_only=d.read_only, serial=d.serial, format=d.format)
        for share in spec.shares:
            machine.bind_share(share.tag, make_server(share))


def template_key(config: MachineConfig, image_digest: str, cache: TemplateCache | None = None) -> dict:
    """The template's key. With ``cache``, the kernel's digest is remembered beside its templates: hashing the
    kernel is most of a key's cost, and every VMM process computes the key afresh."""
    return config_key(config, image_digest=image_digest, ready=READY,
                      digests=cache.digest_memo if cache is not None else None)


def wait_for_announcement(sock: socket.socket, timeout: float) -> bytes:
    """Read the agent's port until its unasked HELLO reply (skipping what came before it: tty echo); returns it.
    The socket is left blocking, as the relay needs it."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            start = data.find(ANNOUNCEMENT_HEADER)
            size = frame_size(data, start) if start >= 0 else None
            if size is not None and len(data) - start >= size:
                return data[start:start + size]
            left = deadline - time.monotonic()
            if left <= 0:
                raise VmmError(f"the agent did not announce itself within {timeout:.0f} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise VmmError("the agent's port closed before it announced itself")
            data += chunk
    finally:
        sock.settimeout(None)


def ask_hello(sock: socket.socket, timeout: float) -> bytes:
    """A restored agent announced itself long ago (to the template's builder): ask again. Its reply is what the
    sandbox's client waits for, and proves the clone is alive."""
    sock.sendall(encode_frame(Msg.HELLO, 0, encode_fields([(Tag.VERSION, PROTO_VERSION)])))
    return wait_for_announcement(sock, timeout)


def build_template(make_config: Callable[[], MachineConfig], directory: Path, timeout: float) -> None:
    """Boot a template machine, wait for its agent, snapshot it into ``directory``."""
    with Machine(make_config()) as machine:
        machine.start()
        try:
            wait_for_announcement(machine.agent_socket(AGENT_PORT), timeout)
        except VmmError as e:
            raise SnapshotError(f"building a template: {e}\n{machine.console.tail()}") from None
        machine.snapshot(directory)


def restore_clone(cache: TemplateCache, key: dict, make_config: Callable[[], MachineConfig], timeout: float,
                  bind: Callable[[Machine], None], build=build_template, hello=ask_hello,
                  report: Callable[[str], None] = lambda line: None) -> tuple[Machine, bytes]:
    """A running clone of the template for ``key`` (built first if missing), its slots bound, and its agent's
    HELLO reply. A template that fails to restore (corrupted, or removed by ``msb snapshot rm`` or another
    process's eviction between its lookup and the restore) is dropped and built again once; never booted as it
    is. ``report`` gets a line naming the template built or restored, for the sandbox's console log.
    (``build`` and ``hello`` are the agent's ready point; tests on hosts without guest user space pass others.)"""
    def build_reported(directory: Path) -> None:
        report(f"booting snapshot template {cache.path_for(key).name} for this configuration")
        build(make_config, directory, timeout)

    for attempt in (1, 2):
        with cache.pinned(key):  # no eviction between the lookup and the mapping of its memory
            path = cache.get_or_build(key, build_reported)
            seen = cache.fingerprint(path)
            machine = None
            try:
                machine = Machine.restore(path, make_config(), verify_memory=False)
                machine.start()
            except SnapshotError:
                if machine is not None:
                    machine.close()
                if seen is not None:  # (None: it is gone already) never a good one another process rebuilt since
                    cache.invalidate(key, only_if=seen)
                if attempt == 2:
                    raise
                continue
        report(f"restored snapshot template {path.name}")
        try:
            bind(machine)
            return machine, hello(machine.agent_socket(AGENT_PORT), timeout)
        except BaseException:
            machine.close()
            raise
    raise AssertionError("unreachable")
