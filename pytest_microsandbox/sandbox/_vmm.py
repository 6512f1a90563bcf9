"""The VMM process of one ``vm`` sandbox: restore its machine from the snapshot template of its configuration (see
``_template``; built on first use) or, when snapshots are off or its devices do not fit the template's slots, boot
one with exactly its devices; then relay the agent port to the inherited socket until either side ends.

    python -m pytest_microsandbox.sandbox._vmm --fd N SPEC_JSON

Disk images are ``flock``-ed by the virtio-blk device (shared when read-only, exclusive otherwise) for as long as
this process lives: a second writer is refused at once, a crash releases them.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys

from _vmcore.confine import confine
from _vmcore.errors import VmmError
from _vmcore.initramfs import build_initramfs
from _vmcore.kernels import find_kernel
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.template_cache import TemplateCache
from pytest_microsandbox.sandbox._template import AGENT_PORT, SlotLayout, restore_clone, template_key

# libkrunfw's kernel has the dummy network driver built in, which makes dummy0 at boot: a sandbox has loopback only.
GUEST_CMDLINE = "dummy.numdummies=0"


def share_server(share: dict):
    from _vmcore.fs.server import FuseServer

    return FuseServer(share["root"], readonly=share["readonly"], quota_mib=share.get("quota_mib"))


def shares(spec: dict) -> list:
    if not spec["shares"]:
        return []
    from _vmcore.fs.virtio_fs import VirtioFs

    return [VirtioFs(share_server(s), s["tag"]) for s in spec["shares"]]


def start_machine(spec: dict) -> tuple[Machine, bytes]:
    """The sandbox's running machine and, for a restored clone, the agent's HELLO reply to pass on (a cold-booted
    agent announces itself on the port)."""
    kernel = str(find_kernel(spec["kernel"]).path)
    initramfs = build_initramfs()
    cmdline = f"MSB_AGENT_PORT=name:{AGENT_PORT} {GUEST_CMDLINE}"
    layout = SlotLayout.for_spec(spec) if spec.get("snapshots") else None
    if layout is None:
        machine = Machine(MachineConfig(
            kernel=kernel, memory_mib=spec["memory_mib"], vcpus=spec["cpus"], initramfs=initramfs,
            disks=[Disk(d["path"], read_only=d["read_only"], serial=d["serial"], format=d.get("format", "raw"))
                   for d in spec["disks"]],
            console_ports=(AGENT_PORT,), extra_devices=shares(spec), cmdline_extra=cmdline,
            console_log=spec["console_log"]))
        machine.start()
        return machine, b""

    def make_config() -> MachineConfig:
        return layout.machine_config(spec, kernel, initramfs, cmdline)

    cache = TemplateCache(spec["snapshots"], keep=spec.get("snapshot_keep"))
    key = template_key(make_config(), spec.get("image_digest", ""), cache)
    return restore_clone(cache, key, make_config, spec.get("boot_timeout", 60.0),
                         lambda machine: layout.bind(machine, spec, share_server), report=report)


def report(line: str) -> None:
    """A line of our own in the sandbox's console log (our stderr), between the guest's."""
    print(f"msb-vmm: {line}", file=sys.stderr, flush=True)


def relay(a: socket.socket, b: socket.socket, ended) -> None:
    """Copy bytes both ways until a side closes or ``ended()`` (the guest powered off or reset)."""
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    while not ended():
        for key, _ in sel.select(0.2):
            chunk = key.fileobj.recv(1 << 16)
            if not chunk:
                return
            key.data.sendall(chunk)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "--fd":
        print("usage: python -m pytest_microsandbox.sandbox._vmm --fd N SPEC_JSON", file=sys.stderr)
        return 2
    host = socket.socket(fileno=int(argv[1]))
    spec = json.loads(argv[2])
    try:
        report(confine())  # before any guest runs: what it could reach through us is confined from the start
    except OSError as e:
        report(f"running unconfined: {e}")
    try:
        machine, announcement = start_machine(spec)
    except (VmmError, OSError) as e:  # the sandbox's boot error shows this (the console log is our stderr)
        report(str(e))
        return 1
    with machine:
        if announcement:
            host.sendall(announcement)
        relay(host, machine.agent_socket(AGENT_PORT), machine.stopped.is_set)
        if machine.stopped.is_set():  # the sandbox's console log says why its guest ended
            report(f"guest stopped: {machine.exit_reason}{': ' + machine.exit_detail if machine.exit_detail else ''}")
            for error in machine.device_errors:
                report(f"device error: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
