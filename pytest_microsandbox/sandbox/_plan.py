"""From a ``SandboxConfig`` to a ``GuestPlan``: the image's root, the volumes' host paths, env and workdir.

Named volumes are looked up (or created, by their mode) here; the names of those mounted are returned so the
sandbox can record them in the store before the guest starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_microsandbox.agent import BootConfig, GuestMount
from pytest_microsandbox.errors import ImageError, InvalidConfigError
from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, VolumeKind
from pytest_microsandbox.sandbox._backend import DiskAttachment, GuestPlan
from pytest_microsandbox.sandbox._config import SandboxConfig, Security
from pytest_microsandbox.sandbox._hostroot import host_mounts, host_root, interpreter_path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class NamedMount:
    volume: str
    guest_path: str
    readonly: bool


@dataclass(frozen=True)
class ResolvedImage:
    """A sandbox's image, pulled (or found in the cache) once: its root as a directory (the namespace backend, and
    the vm backend when there is no disk), its root disk, and what it sets for the guest."""

    root: Path
    disk: Path | None  # the ext4 root disk (vm); None: the host's own root, shared through virtio-fs
    digest: str  # part of a snapshot template's key ("host" for the host's root)
    mounts: tuple[GuestMount, ...]  # what the host's root needs beneath it (its /dev, ...)
    env: dict[str, str]
    workdir: str | None


def resolve_image(image: str, home: Path) -> ResolvedImage:
    from pytest_microsandbox.images import HostRef, parse_reference

    ref = parse_reference(image)
    if isinstance(ref, HostRef):
        env = {"PATH": DEFAULT_PATH, "HOME": "/root"}
        extra = interpreter_path()
        if extra:
            env["PATH"] = f"{extra}:{DEFAULT_PATH}"
        return ResolvedImage(host_root(home), None, "host", tuple(host_mounts()), env, None)
    from pytest_microsandbox.images import pull_image

    cached = pull_image(ref, home=home, policy="missing")
    if not cached.rootfs.is_dir():
        raise ImageError(f"image {image} has no unpacked root in the cache ({cached.rootfs})")
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", **cached.config.env}
    workdir = cached.config.working_dir or None
    return ResolvedImage(cached.rootfs, cached.disk, cached.digest, (), env, workdir if workdir != "/" else None)


def _flags(m: MountConfig) -> dict[str, bool]:
    return {"readonly": m.readonly, "noexec": m.noexec, "nosuid": m.nosuid, "nodev": m.nodev}


def _check_disk_image(path: str, fmt: str, readonly: bool, isolation: str) -> None:
    """Refuse at create time what the backend would not attach: formats other than raw in a namespace sandbox,
    and (vm) images of a variant or feature our virtio-blk device does not read, opened once here to find out."""
    if fmt == DiskImageFormat.RAW:
        return
    if isolation != "vm":
        raise InvalidConfigError(f"disk image {path}: {fmt} images are read by the vm backend's own block device "
                                 "only; the namespace backend attaches raw images (convert it with qemu-img "
                                 "convert -O raw, or use isolation='vm')")
    from _vmcore.devices.block_image import DiskError
    from _vmcore.devices.disk_images import open_image

    try:
        open_image(path, fmt, read_only=readonly).close()
    except DiskError as e:
        raise InvalidConfigError(str(e)) from None


def build_plan(config: SandboxConfig, home: Path, run_dir: Path) -> tuple[GuestPlan, list[NamedMount]]:
    from pytest_microsandbox.volumes._volume import Volume

    image = resolve_image(config.image, home)
    mounts = list(image.mounts)
    disks: list[DiskAttachment] = []
    named: list[NamedMount] = []
    quotas: dict[str, int] = {}
    for guest_path, m in sorted(config.volumes.items()):  # parents before children
        if m.kind == MountKind.TMPFS:
            mounts.append(GuestMount("tmpfs", guest_path, size_mib=m.size_mib, mode=0o1777, **_flags(m)))
        elif m.kind == MountKind.BIND:
            if not Path(m.bind).exists():
                raise InvalidConfigError(f"bind mount source does not exist: {m.bind}")
            mounts.append(GuestMount("bind", guest_path, m.bind, **_flags(m)))
            if m.quota_mib:
                quotas[guest_path] = m.quota_mib
        elif m.kind == MountKind.DISK:
            if not Path(m.disk).is_file():
                raise InvalidConfigError(f"disk image does not exist: {m.disk}")
            fmt = str(m.format or DiskImageFormat.RAW)
            _check_disk_image(m.disk, fmt, m.readonly, config.isolation)
            disks.append(DiskAttachment(m.disk, guest_path, m.fstype, **_flags(m), format=fmt))
        else:
            handle = Volume.for_mount(m, home=home)
            named.append(NamedMount(handle.name, guest_path, m.readonly))
            if handle.kind == VolumeKind.DISK:
                disks.append(DiskAttachment(str(handle.disk_image), guest_path, "ext4", **_flags(m)))
            else:
                mounts.append(GuestMount("bind", guest_path, str(handle.path), **_flags(m)))
                if handle.quota_mib:
                    quotas[guest_path] = handle.quota_mib
    env = {**image.env, **config.env}
    boot = BootConfig(
        root=GuestMount("bind", source=str(image.root)),
        mounts=mounts,
        hostname=config.name[:63],
        env=env,
        workdir=config.workdir or image.workdir,
        restricted=config.security == Security.RESTRICTED,
    )
    return GuestPlan(config, run_dir, boot, disks, quotas=quotas, home=home, image=image), named
