"""The VMM process of one ``vm`` sandbox, forked from the zygote (``zygote``) with everything imported and computed
once (``Preloaded``): jail itself (``_vmcore.jail``: a root holding only what it serves) and confine itself
(``_vmcore.confine``), then restore its machine from the snapshot template of its configuration (see
``template``; built on first use) or, when snapshots are off or its devices do not fit the template's slots, boot
one with exactly its devices; then hand the agent's port to the owner's socket and wait until either side ends.

Disk images are ``flock``-ed by the virtio-blk device (shared when read-only, exclusive otherwise) for as long as
this process lives: a second writer is refused at once, a crash releases them.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field, replace

# Modules the VMM's code imports where it needs them, imported here: a jailed VMM has no Python installation.
import _vmcore.devices.disk_images  # noqa: F401
import _vmcore.devices.qcow2  # noqa: F401
import _vmcore.devices.vmdk  # noqa: F401
import _vmcore.krunfw  # noqa: F401
from _vmcore import host, snapshot
from _vmcore.confine import SeccompFilter, confine, confine_without_seccomp, seccomp_filter
from _vmcore.devices.virtio_fs import VirtioFs
from _vmcore.errors import KernelLoadError, VmmError
from _vmcore.fs.opcodes import opcode_name
from _vmcore.fs.quota import accounts_dir
from _vmcore.fs.server import FuseServer, hold_proc_access
from _vmcore.initramfs import build_initramfs
from _vmcore.jail import Exposed, JailRefused, enter_jail, kernel_filesystem_mounts
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.template_cache import TemplateCache
from pytest_microsandbox._kernel import find_guest_kernel
from pytest_microsandbox.errors import BootError
from pytest_microsandbox.vmm.spec import ResolvedSpec, ShareSpec, VmSpec
from pytest_microsandbox.vmm.template import AGENT_PORT, SlotLayout, restore_clone, template_key

# libkrunfw's kernel has the dummy network driver built in, which makes dummy0 at boot: a sandbox has loopback only.
GUEST_CMDLINE = "dummy.numdummies=0"
_smaps_fd = -1  # /proc/self/smaps_rollup, for ``report_memory``
JAIL_ROOT = "vmm-root"  # in the sandbox's run directory (beside its console log): where the VMM's root is built


@dataclass
class Preloaded:
    """What every VMM forked from one zygote shares, computed there once: the initramfs (and its digest), the
    seccomp filter, the kind of KVM; kernels found and hashed per path as sandboxes name them."""

    initramfs: bytes
    kvm_kind: str
    seccomp: SeccompFilter | None
    seccomp_error: str = ""
    kernels: dict[str | None, str] = field(default_factory=dict)  # as named -> found (the search runs ldconfig)
    kernel_mounts: tuple[str, ...] | None = None  # ``kernel_filesystem_mounts()``: see ``refresh``

    @classmethod
    def load(cls) -> Preloaded:
        initramfs = build_initramfs()
        snapshot.bytes_sha256(initramfs)
        try:
            seccomp, error = seccomp_filter(), ""
        except OSError as e:
            seccomp, error = None, str(e)
        preloaded = cls(initramfs, str(host.detect_kvm().kind), seccomp, error)
        preloaded.refresh()
        return preloaded

    def refresh(self) -> None:
        """Read what changes rarely but may (where the host mounts its kernel's own file systems, which a jail must
        not carry in): between requests, so no VMM spends its time on it."""
        try:
            self.kernel_mounts = tuple(kernel_filesystem_mounts())
        except OSError:
            pass  # the last list read stands (none yet: each VMM reads its own)

    def resolve(self, spec: VmSpec) -> ResolvedSpec:
        """``spec`` with its kernel found (a path, or why not) and every path resolved; the kernel's digest is
        computed here, before the fork, so each VMM finds it in memory."""
        kernel, kernel_error = spec.kernel, ""
        try:
            if kernel not in self.kernels:
                self.kernels[kernel] = os.path.realpath(find_guest_kernel(kernel).path)
            kernel = self.kernels[kernel]
            memo = TemplateCache(spec.snapshots).digest_memo if spec.snapshots else None
            if memo is not None:
                os.makedirs(memo, exist_ok=True)
            snapshot.file_sha256(kernel, memo)
        except (BootError, OSError) as e:
            kernel_error = str(e)
        resolved = replace(
            spec, kernel=kernel, console_log=os.path.realpath(spec.console_log),
            disks=tuple(replace(d, path=os.path.realpath(d.path)) for d in spec.disks),
            shares=tuple(replace(s, root=os.path.realpath(s.root)) for s in spec.shares),
            snapshots=os.path.realpath(spec.snapshots) if spec.snapshots else spec.snapshots)
        return ResolvedSpec(resolved, kernel_error, self.kernel_mounts)


def exposed_paths(resolved: ResolvedSpec) -> list[Exposed]:
    """What a VMM reaches on the host: its kernel, disks (a qcow2's directory too: its backing files lie there),
    shared directories, template cache, console log, the quota accounts its shares keep, ``/dev/kvm``. No ``/proc``:
    another VMM's ``/proc/PID/root`` would lead into its jail (the FUSE servers' ``/proc/self/fd`` is opened
    before, ``hold_proc_access``)."""
    spec = resolved.spec
    paths = [Exposed("/dev/kvm", writable=True), Exposed(spec.console_log, writable=True)]
    if not resolved.kernel_error:
        paths.append(Exposed(spec.kernel))
    for d in spec.disks:
        if d.format != "raw":
            paths.append(Exposed(os.path.dirname(d.path)))
        paths.append(Exposed(d.path, writable=not d.read_only))
    for s in spec.shares:
        paths.append(Exposed(s.root, writable=not s.readonly))
    if spec.snapshots:
        os.makedirs(spec.snapshots, exist_ok=True)
        paths.append(Exposed(spec.snapshots, writable=True))
    if any(s.quota_mib for s in spec.shares):
        accounts = accounts_dir()
        if accounts is not None:
            paths.append(Exposed(accounts, writable=True))
    return paths


class ShareServers:
    """Makes the FUSE server of each share (read-only ones open without asking and remember missing names, see
    ``FuseServer``) and keeps them, to say in the console log what each served."""

    def __init__(self) -> None:
        self.made: list[tuple[str, FuseServer]] = []

    def __call__(self, share: ShareSpec) -> FuseServer:
        server = FuseServer(share.root, readonly=share.readonly, quota_mib=share.quota_mib,
                            cache_timeout=share.cache_seconds)
        self.made.append((share.tag, server))
        return server

    def report(self) -> None:
        for tag, server in self.made:
            counts = {op: n for op, n in server.request_counts().items() if n}
            busiest = ", ".join(f"{opcode_name(op)} {n}" for op, n in sorted(counts.items(), key=lambda c: -c[1])[:8])
            report(f"share {tag} served {sum(counts.values())} requests ({busiest})")


def start_machine(resolved: ResolvedSpec, preloaded: Preloaded, servers: ShareServers) -> tuple[Machine, bytes]:
    """The sandbox's running machine and, for a restored clone, the agent's HELLO reply to pass on (a cold-booted
    agent announces itself on the port)."""
    if resolved.kernel_error:
        raise KernelLoadError(resolved.kernel_error)
    spec = resolved.spec
    kernel, initramfs = spec.kernel, preloaded.initramfs
    cmdline = f"MSB_AGENT_PORT=name:{AGENT_PORT} {GUEST_CMDLINE}"
    layout = SlotLayout.for_spec(spec) if spec.snapshots else None
    if layout is None:
        report_ready(spec)
        machine = Machine(MachineConfig(
            kernel=kernel, memory_mib=spec.memory_mib, vcpus=spec.cpus, initramfs=initramfs,
            disks=[Disk(d.path, read_only=d.read_only, serial=d.serial, format=d.format) for d in spec.disks],
            console_ports=(AGENT_PORT,), shares=[VirtioFs(servers(s), s.tag) for s in spec.shares],
            cmdline_extra=cmdline, console_log=spec.console_log, kvm_kind=preloaded.kvm_kind))
        machine.start()
        return machine, b""

    def make_config() -> MachineConfig:
        return layout.machine_config(spec, kernel, initramfs, cmdline, preloaded.kvm_kind)

    cache = TemplateCache(spec.snapshots, keep=spec.snapshot_keep)
    key = template_key(make_config(), spec.image_digest, cache)
    report_ready(spec)
    return restore_clone(cache, key, make_config, spec.boot_timeout,
                         lambda machine: layout.bind(machine, spec, servers), report=report)


def report_ready(spec: VmSpec) -> None:
    """How long the host took from the sandbox's request to here, where the machine is built or restored (and with
    ``report_memory``, what this process holds now: ``bench/vmm_overhead.py``)."""
    elapsed_ms = 1000 * (time.monotonic() - spec.requested_at)
    line = f"ready to run the machine {elapsed_ms:.1f} ms after the request"
    if _smaps_fd >= 0:  # opened before the jail (it has no /proc)
        rows = os.pread(_smaps_fd, 4096, 0).splitlines()
        kib = {row.split()[0]: int(row.split()[1]) for row in rows if row.endswith(b" kB")}
        private = kib[b"Private_Clean:"] + kib[b"Private_Dirty:"]
        line += f", {kib[b'Pss:'] / 1024:.1f} MiB PSS, {private / 1024:.1f} MiB private"
    report(line)


def report(line: str) -> None:
    """A line of our own in the sandbox's console log (our stderr), between the guest's."""
    print(f"msb-vmm: {line}", file=sys.stderr, flush=True)


def confine_self(resolved: ResolvedSpec, preloaded: Preloaded) -> None:
    """Jail, then confine (the filter denies what the jail needs): before any guest runs, so what it could reach
    through us is confined from the start. A host that refuses a namespace or seccomp still runs the sandbox, and
    says so; a jail that fails half-built raises (the sandbox fails with the reason)."""
    global _smaps_fd
    hold_proc_access()
    if resolved.spec.report_memory:
        _smaps_fd = os.open("/proc/self/smaps_rollup", os.O_RDONLY | os.O_CLOEXEC)
    try:
        root = os.path.join(os.path.dirname(resolved.spec.console_log), JAIL_ROOT)
        os.makedirs(root, exist_ok=True)
        report(enter_jail(root, exposed_paths(resolved), resolved.kernel_mounts))
    except JailRefused as e:
        report(f"running without its own mount namespace: {e}")
    if preloaded.seccomp is None:
        report(confine_without_seccomp(preloaded.seccomp_error))
    else:
        report(confine(preloaded.seccomp))


def run(host_end: socket.socket, resolved: ResolvedSpec, preloaded: Preloaded) -> int:
    """The VMM's life, once forked (its spec through ``Preloaded.resolve``); its exit code."""
    try:
        confine_self(resolved, preloaded)
    except OSError as e:
        report(f"cannot confine the VMM: {e}")
        return 1
    servers = ShareServers()
    try:
        machine, announcement = start_machine(resolved, preloaded, servers)
    except (VmmError, OSError) as e:  # the sandbox's boot error shows this (the console log is our stderr)
        report(str(e))
        return 1
    with machine:
        if announcement:
            host_end.sendall(announcement)
        # The guest's port is the owner's socket from now on: no relay through this process.
        host_closed = machine.attach_port(AGENT_PORT, host_end)
        while not machine.stopped.is_set() and not host_closed.wait(0.2):
            pass
        if machine.stopped.is_set():  # the sandbox's console log says why its guest ended
            report(f"guest stopped: {machine.exit_reason}{': ' + machine.exit_detail if machine.exit_detail else ''}")
            for error in machine.device_errors:
                report(f"device error: {error}")
        servers.report()
    return 0
