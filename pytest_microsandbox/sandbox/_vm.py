"""The ``vm`` backend: one VMM process per sandbox running ``_vmcore``'s Machine with libkrunfw's kernel, our agent
as PID 1 (the initramfs), the image's root disk on virtio-blk, and the agent reached over a virtio-console port.

Snapshots: unless ``--msb-snapshots=false``, the VMM process restores the sandbox from the snapshot template of
its configuration under ``<home>/snapshots`` (the first sandbox builds it, under a file lock, so xdist workers
build it once) and binds its shares and disks to the template's empty slots; every BOOT carries fresh entropy and
the host's clock so clones are not twins (``vmm.template``). After a build, the templates beyond
``--msb-snapshot-keep`` that were used least recently are removed.

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
import os
import socket
import time
from dataclasses import asdict, replace
from pathlib import Path

from pytest_microsandbox._validate import parse_positive_int
from pytest_microsandbox.agent import GuestMount
from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.sandbox._backend import Guest, GuestPlan
from pytest_microsandbox.sandbox._zygote_client import zygote
from pytest_microsandbox.vmm.spec import (
    BIND_CACHE_SECONDS,
    DEFAULT_SNAPSHOT_KEEP,
    IMAGE_CACHE_SECONDS,
    MAX_DEVICES,
    ROOT_SERIAL,
    VmSpec,
)


def virtiofs_available() -> bool:
    try:
        from _vmcore.fs import virtio_fs  # noqa: F401
    except ImportError:
        return False
    return True


def snapshots_enabled() -> bool:
    """``--msb-snapshots`` (the plugin sets MSB_SNAPSHOTS=false when it is off); on by default."""
    return os.environ.get("MSB_SNAPSHOTS", "true").strip().lower() not in ("0", "false", "no", "off")


def snapshot_keep() -> int:
    """``--msb-snapshot-keep`` (the plugin exports MSB_SNAPSHOT_KEEP): how many templates stay cached."""
    text = os.environ.get("MSB_SNAPSHOT_KEEP", "").strip()
    return parse_positive_int(text, "MSB_SNAPSHOT_KEEP") if text else DEFAULT_SNAPSHOT_KEEP


def vm_spec(plan: GuestPlan, root_disk: Path | None, kernel: str | None = None) -> tuple[VmSpec, list[GuestMount]]:
    """Translate a plan's mounts for a VM: binds become virtio-fs tags, disks virtio-blk serials. Returns the spec
    and the boot config's new root + mounts (root first)."""
    spec = VmSpec(plan.config.memory_mib, plan.config.cpus, kernel, str(plan.run_dir / "console.log"))
    mounts: list[GuestMount] = []
    if root_disk is not None:
        spec.disks.append({"path": str(root_disk), "read_only": True, "serial": ROOT_SERIAL, "format": "raw"})
        root = GuestMount("block_serial", source=ROOT_SERIAL)
    else:
        root = _share(spec, plan.boot.root.source if plan.boot.root else "", True, image=True)
    for m in plan.boot.mounts:
        if m.kind == "bind":
            tag = _share(spec, m.source, m.readonly, plan.quotas.get(m.target)).source
            mounts.append(GuestMount("virtiofs", m.target, tag, readonly=m.readonly, noexec=m.noexec,
                                     nosuid=m.nosuid, nodev=m.nodev))
        elif m.kind == "overlay":
            # The lower reaches the VM as a read-only share; the guest's agent builds the writable layer over it,
            # in guest memory (fstype "virtiofs" tells it the source is a share's tag, not a path).
            tag = _share(spec, m.source, True, image=True).source
            mounts.append(replace(m, source=tag, fstype="virtiofs"))
        else:
            mounts.append(m)
    for i, d in enumerate(plan.disks):
        serial = f"msb-disk{i}"
        spec.disks.append({"path": d.image, "read_only": d.readonly, "serial": serial, "format": d.format})
        mounts.append(GuestMount("block_serial", d.guest_path, serial, fstype=d.fstype, readonly=d.readonly,
                                 noexec=d.noexec, nosuid=d.nosuid, nodev=d.nodev))
    if 1 + len(spec.disks) + len(spec.shares) > MAX_DEVICES:
        raise SandboxError(f"a vm sandbox has at most {MAX_DEVICES - 1} virtio devices for its root, shared "
                           f"directories and disks; this one needs {len(spec.disks) + len(spec.shares)}")
    return spec, [root, *mounts]


@functools.lru_cache(maxsize=4)
def resolved_kernel(explicit: str | None) -> str | None:
    """The guest kernel's path, found once per process and handed to every VMM (the search runs ``ldconfig -p``);
    when none is found, ``explicit`` as it is, and the VMM reports why as the sandbox's boot error."""
    from _vmcore.kernels import KernelLoadError, find_kernel

    try:
        return str(find_kernel(explicit).path)
    except KernelLoadError:
        return explicit


def _share(spec: VmSpec, path: str, readonly: bool, quota_mib: int | None = None, image: bool = False) -> GuestMount:
    if not virtiofs_available():
        raise SandboxError(
            f"the vm backend shares host directories ({path}) through virtio-fs, which this build of _vmcore does "
            "not have yet: use an image with a root disk (not 'host') and tmpfs/disk mounts, or isolation='namespace'")
    tag = f"msb-fs{len(spec.shares)}"
    spec.shares.append({"tag": tag, "root": path, "readonly": readonly, "quota_mib": quota_mib,
                        "cache_seconds": IMAGE_CACHE_SECONDS if image else BIND_CACHE_SECONDS})
    return GuestMount("virtiofs", source=tag)


class VmBackend:
    name = "vm"
    description = "vm"

    def start(self, plan: GuestPlan) -> Guest:
        requested_at = time.monotonic()
        home = plan.run_dir.parent.parent
        root_disk, digest = None, "host"
        if plan.config.image != "host":
            from pytest_microsandbox.images import pull_image

            image = pull_image(plan.config.image, policy="missing", home=home)
            root_disk, digest = image.disk, image.digest
        spec, mounts = vm_spec(plan, root_disk, resolved_kernel(os.environ.get("MSB_KERNEL")))
        spec.image_digest = digest
        spec.boot_timeout = plan.config.boot_timeout
        spec.requested_at = requested_at
        if snapshots_enabled():
            spec.snapshots = str(home / "snapshots")
            spec.snapshot_keep = snapshot_keep()
        plan.boot = replace(plan.boot, root=mounts[0], mounts=mounts[1:])
        plan.fresh_identity = True
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with open(plan.run_dir / "console.log", "ab") as log:
                process = zygote().spawn(asdict(spec), theirs, log.fileno())
        except (OSError, SandboxError) as e:
            ours.close()
            raise SandboxError(f"cannot start the VMM process: {e}") from e
        finally:
            theirs.close()
        # cold: the agent's own announcement; restored: the VMM's HELLO reply
        return Guest(process, ours, plan.run_dir / "console.log", announces=True)
