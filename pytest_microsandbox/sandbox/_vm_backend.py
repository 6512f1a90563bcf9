"""The ``vm`` backend: one VMM process per sandbox running ``_vmcore``'s Machine with libkrunfw's kernel, our agent
as PID 1 (the initramfs), the image's root disk on virtio-blk, and the agent reached over a virtio-console port.

Snapshots: unless ``VmOptions.snapshots`` is off, the VMM process restores the sandbox from the snapshot template of
its configuration under ``<home>/snapshots`` (the first sandbox builds it, under a file lock, so xdist workers
build it once) and binds its shares and disks to the template's empty slots; every BOOT carries fresh entropy and
the host's clock so clones are not twins (``vmm.template``). After a build, the templates beyond
``VmOptions.snapshot_keep`` that were used least recently are removed.

The VMM process is forked by this process's VMM zygote (``vmm.zygote``: the VMM's code imported once, so a VMM costs a
fork, not an interpreter) and dies with it, and the zygote with the thread that started it; the VMM hands the
agent's port to the socketpair end it was given (no relay) and exits when either side closes. The boot config goes
over the connection (BOOT), exactly as for the namespace backend.

Mount kinds: tmpfs, and disk images on virtio-blk by serial (``flock`` on the image held by the VMM: shared for
read-only, exclusive otherwise). Bind mounts, directory volumes and the ``host`` image go through virtio-fs
(``_vmcore.fs``: our FUSE server, read-only and quota enforced on the host); a build without it refuses them with a
clear SandboxError rather than half-mounting them.
"""

from __future__ import annotations

import functools
import socket
import time
from dataclasses import replace
from pathlib import Path

from pytest_microsandbox.agent import GuestMount
from pytest_microsandbox.errors import BootError, SandboxError
from pytest_microsandbox.sandbox._backend import Guest, GuestPlan
from pytest_microsandbox.sandbox._zygote_client import zygote
from pytest_microsandbox.templates import templates_dir
from pytest_microsandbox.vmm.spec import (
    BIND_CACHE_SECONDS,
    IMAGE_CACHE_SECONDS,
    MAX_DEVICES,
    ROOT_SERIAL,
    DiskSpec,
    ShareSpec,
    VmSpec,
)


def virtiofs_available() -> bool:
    try:
        from _vmcore.devices import virtio_fs  # noqa: F401
    except ImportError:
        return False
    return True


def vm_spec(plan: GuestPlan, root_disk: Path | None, kernel: str | None = None) -> tuple[VmSpec, list[GuestMount]]:
    """Translate a plan's mounts for a VM: binds become virtio-fs tags, disks virtio-blk serials. Returns the spec
    and the boot config's new root + mounts (root first)."""
    disks: list[DiskSpec] = []
    shares: list[ShareSpec] = []
    mounts: list[GuestMount] = []
    if root_disk is not None:
        disks.append(DiskSpec(str(root_disk), read_only=True, serial=ROOT_SERIAL))
        root = GuestMount("block_serial", source=ROOT_SERIAL)
    else:
        root = _share(shares, plan.boot.root.source if plan.boot.root else "", True, image=True)
    for m in plan.boot.mounts:
        if m.kind == "bind":
            tag = _share(shares, m.source, m.readonly, plan.quotas.get(m.target)).source
            mounts.append(GuestMount("virtiofs", m.target, tag, readonly=m.readonly, noexec=m.noexec,
                                     nosuid=m.nosuid, nodev=m.nodev))
        elif m.kind == "overlay":
            # The lower reaches the VM as a read-only share; the guest's agent builds the writable layer over it,
            # in guest memory (fstype "virtiofs" tells it the source is a share's tag, not a path).
            tag = _share(shares, m.source, True, image=True).source
            mounts.append(replace(m, source=tag, fstype="virtiofs"))
        else:
            mounts.append(m)
    for i, d in enumerate(plan.disks):
        serial = f"msb-disk{i}"
        disks.append(DiskSpec(d.image, read_only=d.readonly, serial=serial, format=d.format))
        mounts.append(GuestMount("block_serial", d.guest_path, serial, fstype=d.fstype, readonly=d.readonly,
                                 noexec=d.noexec, nosuid=d.nosuid, nodev=d.nodev))
    if 1 + len(disks) + len(shares) > MAX_DEVICES:
        raise SandboxError(f"a vm sandbox has at most {MAX_DEVICES - 1} virtio devices for its root, shared "
                           f"directories and disks; this one needs {len(disks) + len(shares)}")
    spec = VmSpec(plan.config.memory_mib, plan.config.cpus, kernel, str(plan.run_dir / "console.log"),
                  disks=tuple(disks), shares=tuple(shares))
    return spec, [root, *mounts]


@functools.lru_cache(maxsize=4)
def resolved_kernel(explicit: str | None) -> str | None:
    """The guest kernel's path, found once per process and handed to every VMM (the search runs ``ldconfig -p``);
    when none is found, ``explicit`` as it is, and the VMM reports why as the sandbox's boot error."""
    from pytest_microsandbox._kernel import find_guest_kernel

    try:
        return str(find_guest_kernel(explicit).path)
    except BootError:
        return explicit


def _share(shares: list[ShareSpec], path: str, readonly: bool, quota_mib: int | None = None,
           image: bool = False) -> GuestMount:
    """Add a share of ``path`` to ``shares`` (tagged by its place) and return the guest's mount of it."""
    if not virtiofs_available():
        raise SandboxError(
            f"the vm backend shares host directories ({path}) through virtio-fs, which this build of _vmcore does "
            "not have yet: use an image with a root disk (not 'host') and tmpfs/disk mounts, or isolation='namespace'")
    tag = f"msb-fs{len(shares)}"
    shares.append(ShareSpec(tag, path, readonly, quota_mib, IMAGE_CACHE_SECONDS if image else BIND_CACHE_SECONDS))
    return GuestMount("virtiofs", source=tag)


class VmBackend:
    name = "vm"
    description = "vm"

    def start(self, plan: GuestPlan) -> Guest:
        requested_at = time.monotonic()
        assert plan.home is not None and plan.image is not None, "a plan of build_plan"
        options = plan.config.vm
        spec, mounts = vm_spec(plan, plan.image.disk, resolved_kernel(options.kernel))
        spec = replace(spec, image_digest=plan.image.digest, boot_timeout=plan.config.boot_timeout,
                       requested_at=requested_at, snapshot_keep=options.snapshot_keep,
                       snapshots=str(templates_dir(plan.home)) if options.snapshots else None)
        boot = replace(plan.boot, root=mounts[0], mounts=mounts[1:])
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with open(plan.run_dir / "console.log", "ab") as log:
                process = zygote().spawn(spec, theirs, log.fileno())
        except (OSError, SandboxError) as e:
            ours.close()
            raise SandboxError(f"cannot start the VMM process: {e}") from e
        finally:
            theirs.close()
        # cold: the agent's own announcement; restored: the VMM's HELLO reply
        return Guest(process, ours, plan.run_dir / "console.log", boot, announces=True, fresh_identity=True)
