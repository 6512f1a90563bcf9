"""The synchronous volume API (``pytest_microsandbox.sync``), used by the fixtures and by plain test code."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pytest_microsandbox._home import msb_home
from pytest_microsandbox.errors import InvalidConfigError, VolumeAlreadyExistsError, VolumeNotFoundError
from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, NamedVolumeMode, VolumeKind
from pytest_microsandbox.store import VolumeRecord
from pytest_microsandbox.volumes._manager import DISK_IMAGE, VolumeManager, used_bytes

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:
    from pytest_microsandbox.volumes._fs import VolumeFs

Home = str | os.PathLike[str] | None


@functools.lru_cache(maxsize=32)
def _manager_at(home: str) -> VolumeManager:
    return VolumeManager(Path(home))  # holds nothing but paths: one per home serves every call


def _manager(home: Home) -> VolumeManager:
    """The manager of the home ``msb_home`` resolves; an absolute path (the usual case) needs no resolving."""
    text = os.fspath(home) if home else os.environ.get("MSB_HOME")
    if text and text.startswith("/"):
        return _manager_at(text)
    return _manager_at(str(msb_home(home)))


def _get_once_created(name: str, home: Home) -> VolumeHandle:
    """The volume another process is creating right now (xdist workers ensuring one name): wait for it."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

    manager = _manager(home)
    for attempt in Retrying(retry=retry_if_exception_type(VolumeNotFoundError), stop=stop_after_delay(60),
                            wait=wait_exponential(multiplier=0.01, max=0.5), reraise=True):
        with attempt:
            try:
                return Volume.get(name, home=home)
            except VolumeNotFoundError:
                if name in manager.store.transitional_volume_names():
                    raise  # still being created: wait
            # Its creator finished (or rolled back) between the two reads: a state only moves from ``creating`` to
            # ready or absent, so one more read, after the one that saw no transition, tells which.
            try:
                return Volume.get(name, home=home)
            except VolumeNotFoundError:
                raise InvalidConfigError(f"volume {name} vanished while it was being ensured") from None
    raise AssertionError("unreachable")


class VolumeHandle:
    """A recorded volume: its metadata, its files (``fs``) and its removal."""

    def __init__(self, record: VolumeRecord, manager: VolumeManager) -> None:
        self._record = record
        self._manager = manager
        self._used_bytes: int | None = None

    def __repr__(self) -> str:
        return f"VolumeHandle(name={self.name!r}, kind={self.kind.value!r}, path={str(self.path)!r})"

    @property
    def name(self) -> str:
        """The volume's name."""
        return self._record.name

    @property
    def kind(self) -> VolumeKind:
        """``dir`` (a directory) or ``disk`` (an ext4 image)."""
        return VolumeKind(self._record.kind)

    @property
    def quota_mib(self) -> int | None:
        """The most a directory volume may hold, in MiB (None: no quota)."""
        return self._record.quota_mib

    @property
    def size_mib(self) -> int | None:
        """The size of a disk volume's image, in MiB (None for a directory volume)."""
        return self._record.size_mib

    @property
    def labels(self) -> dict[str, str]:
        """The labels it was created with."""
        return dict(self._record.labels)

    @property
    def created_at(self) -> int:
        """Milliseconds since the epoch."""
        return self._record.created_at

    @property
    def path(self) -> Path:
        """Its directory on the host (``<home>/volumes/<name>``)."""
        return self._manager.path_of(self.name)

    @property
    def disk_image(self) -> Path | None:
        """A disk volume's ext4 image (None for a directory volume)."""
        return self.path / DISK_IMAGE if self.kind == VolumeKind.DISK else None

    @property
    def used_bytes(self) -> int:
        """Bytes the volume occupies on the host's disk (measured once per handle)."""
        if self._used_bytes is None:
            self._used_bytes = used_bytes(self.path)
        return self._used_bytes

    @property
    def fs(self) -> VolumeFs:
        """Its files, from the host, no VM needed (a directory volume's only: InvalidConfigError for a disk one)."""
        if self.kind == VolumeKind.DISK:
            raise InvalidConfigError(
                f"volume {self.name} is a disk volume (an ext4 image): its files are reachable inside a sandbox only"
            )
        from pytest_microsandbox.volumes._fs import VolumeFs  # loaded when files are first touched

        return VolumeFs(self.path, quota_mib=self.quota_mib)

    def mount(self, *, readonly: bool = False, noexec: bool = False, nosuid: bool = False,
              nodev: bool = False) -> MountConfig:
        """A ``MountConfig`` that mounts this volume into a sandbox."""
        return Volume.named(self.name, readonly=readonly, noexec=noexec, nosuid=nosuid, nodev=nodev)

    def remove(self) -> None:
        """Remove the volume and its files; VolumeInUseError while a live sandbox mounts it."""
        self._manager.remove(self.name)


class Volume:
    """A named volume just created, and the static entry points of the volume API."""

    def __init__(self, record: VolumeRecord, manager: VolumeManager) -> None:
        self._handle = VolumeHandle(record, manager)

    def __repr__(self) -> str:
        return f"Volume(name={self.name!r}, path={str(self.path)!r})"

    @property
    def name(self) -> str:
        """The volume's name."""
        return self._handle.name

    @property
    def path(self) -> Path:
        """Its directory on the host (``<home>/volumes/<name>``)."""
        return self._handle.path

    @property
    def handle(self) -> VolumeHandle:
        """Its handle: metadata, files and removal."""
        return self._handle

    @property
    def fs(self) -> VolumeFs:
        """Its files, from the host, no VM needed (a directory volume's only)."""
        return self._handle.fs

    # -- management -------------------------------------------------------------------------------------------------

    @staticmethod
    def create(
        name: str,
        *,
        kind: VolumeKind | str = VolumeKind.DIRECTORY,
        size_mib: int | None = None,
        quota_mib: int | None = None,
        labels: dict[str, str] | None = None,
        home: Home = None,
    ) -> Volume:
        """Create a volume (a directory, or an ext4 image of ``size_mib`` for ``kind='disk'``); VolumeAlreadyExistsError
        when the name is taken, InvalidConfigError for a bad name or size."""
        manager = _manager(home)
        record = manager.create(name, kind=kind, size_mib=size_mib, quota_mib=quota_mib, labels=labels)
        return Volume(record, manager)

    @staticmethod
    def get(name: str, *, home: Home = None) -> VolumeHandle:
        """The volume called ``name``; VolumeNotFoundError when there is none."""
        manager = _manager(home)
        record = manager.get(name)
        if record is None:
            raise VolumeNotFoundError(name)
        return VolumeHandle(record, manager)

    @staticmethod
    def list(*, home: Home = None) -> list[VolumeHandle]:
        """Every volume of the home, by name."""
        manager = _manager(home)
        return [VolumeHandle(r, manager) for r in manager.list()]

    @staticmethod
    def remove(name: str, *, home: Home = None) -> None:
        """Remove the volume called ``name`` and its files; VolumeNotFoundError, or VolumeInUseError while a live
        sandbox mounts it."""
        _manager(home).remove(name)

    # -- mount configurations ---------------------------------------------------------------------------------------

    @staticmethod
    def bind(path: str | os.PathLike[str], *, readonly: bool = False, noexec: bool = False, nosuid: bool = False,
             nodev: bool = False, quota_mib: int | None = None) -> MountConfig:
        """Share a host directory (or file) with the sandbox."""
        return MountConfig(MountKind.BIND, bind=path, quota_mib=quota_mib, readonly=readonly,  # type: ignore[arg-type]
                           noexec=noexec, nosuid=nosuid, nodev=nodev)

    @staticmethod
    def named(name: str, *, mode: NamedVolumeMode | str | None = None, kind: VolumeKind | str | None = None,
              size_mib: int | None = None, quota_mib: int | None = None, readonly: bool = False,
              noexec: bool = False, nosuid: bool = False, nodev: bool = False) -> MountConfig:
        """Mount a named volume; ``mode`` says whether the sandbox may create it (``kind``, ``size_mib`` and
        ``quota_mib`` are then its creation options)."""
        return MountConfig(MountKind.NAMED, named=name, named_mode=mode, named_kind=kind,  # type: ignore[arg-type]
                           size_mib=size_mib, quota_mib=quota_mib, readonly=readonly, noexec=noexec, nosuid=nosuid,
                           nodev=nodev)

    @staticmethod
    def for_mount(config: MountConfig, *, home: Home = None) -> VolumeHandle:
        """The volume a named mount refers to, created first where its mode asks for that."""
        if config.kind != MountKind.NAMED or config.named is None:
            raise InvalidConfigError(f"not a named mount: {config!r}")
        mode = config.named_mode or NamedVolumeMode.EXISTING
        if mode != NamedVolumeMode.EXISTING:
            options = {"kind": config.named_kind or VolumeKind.DIRECTORY, "size_mib": config.size_mib,
                       "quota_mib": config.quota_mib}
            try:
                return Volume.create(config.named, home=home, **options).handle  # type: ignore[arg-type]
            except VolumeAlreadyExistsError:
                if mode == NamedVolumeMode.CREATE:
                    raise
                return _get_once_created(config.named, home)
        return Volume.get(config.named, home=home)

    @staticmethod
    def tmpfs(*, size_mib: int | None = None, readonly: bool = False, noexec: bool = False, nosuid: bool = False,
              nodev: bool = False) -> MountConfig:
        """A fresh in-memory filesystem, optionally limited to ``size_mib``."""
        return MountConfig(MountKind.TMPFS, size_mib=size_mib, readonly=readonly, noexec=noexec, nosuid=nosuid,
                           nodev=nodev)

    @staticmethod
    def disk(path: str | os.PathLike[str], *, format: DiskImageFormat | str | None = None, fstype: str | None = None,
             readonly: bool = False, noexec: bool = False, nosuid: bool = False, nodev: bool = False) -> MountConfig:
        """Attach a disk image (raw, qcow2 or vmdk; the format defaults to what the extension says)."""
        return MountConfig(MountKind.DISK, disk=path, format=format, fstype=fstype,  # type: ignore[arg-type]
                           readonly=readonly, noexec=noexec, nosuid=nosuid, nodev=nodev)
