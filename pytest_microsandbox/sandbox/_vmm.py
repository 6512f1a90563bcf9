"""The VMM process of one ``vm`` sandbox: build the Machine from a ``VmSpec``, boot it, and relay its agent port to
the inherited socket until either side ends.

    python -m pytest_microsandbox.sandbox._vmm --fd N SPEC_JSON
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import socket
import sys

from _vmcore.initramfs import build_initramfs
from _vmcore.kernels import find_kernel
from _vmcore.machine import Disk, Machine, MachineConfig


def lock_disks(disks: list[dict]) -> list[int]:
    """flock every disk image we attach (shared when read-only, exclusive otherwise): held until we exit, so a
    crash releases it; a second writer is refused at once."""
    fds = []
    for d in disks:
        if not d.get("lock"):
            continue
        fd = os.open(d["path"], os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if d["read_only"] else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"msb-vmm: disk image {d['path']} is in use by another sandbox") from None
        fds.append(fd)
    return fds


def shares(spec: dict) -> list:
    if not spec["shares"]:
        return []
    from _vmcore.fs.server import FuseServer
    from _vmcore.fs.virtio_fs import VirtioFs

    return [VirtioFs(FuseServer(s["root"], readonly=s["readonly"], quota_mib=s.get("quota_mib")), s["tag"])
            for s in spec["shares"]]


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
    locks = lock_disks(spec["disks"])
    config = MachineConfig(
        kernel=str(find_kernel(spec["kernel"]).path),
        memory_mib=spec["memory_mib"],
        vcpus=spec["cpus"],
        initramfs=build_initramfs(),
        disks=[Disk(d["path"], read_only=d["read_only"], serial=d["serial"]) for d in spec["disks"]],
        console_ports=("agent",),
        extra_devices=shares(spec),
        cmdline_extra="MSB_AGENT_PORT=name:agent",
        console_log=spec["console_log"],
    )
    with Machine(config) as machine:
        machine.start()
        relay(host, machine.agent_socket("agent"), machine.stopped.is_set)
    for fd in locks:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
