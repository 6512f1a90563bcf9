"""The asynchronous volume API, as the seeds write it (``await Volume.create(...)``).

Every call runs the synchronous implementation in a worker thread: one implementation, two faces.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pytest_microsandbox.mounts import MountConfig, VolumeKind
from pytest_microsandbox.volumes import _sync
from pytest_microsandbox.volumes._fs import FsEntry, FsMetadata
from pytest_microsandbox.volumes._fs import VolumeFs as SyncVolumeFs

Home = str | os.PathLike[str] | None


class VolumeFs:
    """Host-side file access to a volume (async)."""

    def __init__(self, sync: SyncVolumeFs) -> None:
        self._sync = sync

    async def read(self, path: str) -> bytes:
        return await asyncio.to_thread(self._sync.read, path)

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return await asyncio.to_thread(self._sync.read_text, path, encoding)

    async def write(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self._sync.write, path, data)

    async def list(self, path: str = "") -> list[FsEntry]:
        return await asyncio.to_thread(self._sync.list, path)

    async def mkdir(self, path: str) -> None:
        await asyncio.to_thread(self._sync.mkdir, path)

    async def remove_file(self, path: str) -> None:
        await asyncio.to_thread(self._sync.remove_file, path)

    async def remove_dir(self, path: str) -> None:
        await asyncio.to_thread(self._sync.remove_dir, path)

    async def copy(self, from_: str, to: str) -> None:
        await asyncio.to_thread(self._sync.copy, from_, to)

    async def rename(self, from_: str, to: str) -> None:
        await asyncio.to_thread(self._sync.rename, from_, to)

    async def stat(self, path: str) -> FsMetadata:
        return await asyncio.to_thread(self._sync.stat, path)

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(self._sync.exists, path)


class VolumeHandle:
    """A recorded volume (async face of ``pytest_microsandbox.sync.VolumeHandle``)."""

    def __init__(self, sync: _sync.VolumeHandle) -> None:
        self._sync = sync

    def __repr__(self) -> str:
        return repr(self._sync)

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def kind(self) -> VolumeKind:
        return self._sync.kind

    @property
    def quota_mib(self) -> int | None:
        return self._sync.quota_mib

    @property
    def size_mib(self) -> int | None:
        return self._sync.size_mib

    @property
    def labels(self) -> dict[str, str]:
        return self._sync.labels

    @property
    def created_at(self) -> int:
        """Milliseconds since the epoch."""
        return self._sync.created_at

    @property
    def path(self) -> Path:
        return self._sync.path

    @property
    def disk_image(self) -> Path | None:
        return self._sync.disk_image

    @property
    def used_bytes(self) -> int:
        """Bytes the volume occupies on the host's disk (measured once per handle: a walk of its tree)."""
        return self._sync.used_bytes

    @property
    def fs(self) -> VolumeFs:
        return VolumeFs(self._sync.fs)

    def mount(self, *, readonly: bool = False, noexec: bool = False, nosuid: bool = False,
              nodev: bool = False) -> MountConfig:
        """A ``MountConfig`` that mounts this volume into a sandbox."""
        return self._sync.mount(readonly=readonly, noexec=noexec, nosuid=nosuid, nodev=nodev)

    async def remove(self) -> None:
        await asyncio.to_thread(self._sync.remove)


class Volume:
    """A named volume just created, and the static entry points of the async volume API."""

    def __init__(self, sync: _sync.Volume) -> None:
        self._sync = sync

    def __repr__(self) -> str:
        return repr(self._sync)

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def path(self) -> Path:
        return self._sync.path

    @property
    def fs(self) -> VolumeFs:
        return VolumeFs(self._sync.fs)

    @property
    def handle(self) -> VolumeHandle:
        return VolumeHandle(self._sync.handle)

    @staticmethod
    async def create(
        name: str,
        *,
        kind: VolumeKind | str = VolumeKind.DIRECTORY,
        size_mib: int | None = None,
        quota_mib: int | None = None,
        labels: dict[str, str] | None = None,
        home: Home = None,
    ) -> Volume:
        sync = await asyncio.to_thread(
            _sync.Volume.create, name, kind=kind, size_mib=size_mib, quota_mib=quota_mib, labels=labels, home=home
        )
        return Volume(sync)

    @staticmethod
    async def get(name: str, *, home: Home = None) -> VolumeHandle:
        return VolumeHandle(await asyncio.to_thread(_sync.Volume.get, name, home=home))

    @staticmethod
    async def list(*, home: Home = None) -> list[VolumeHandle]:
        return [VolumeHandle(h) for h in await asyncio.to_thread(_sync.Volume.list, home=home)]

    @staticmethod
    async def remove(name: str, *, home: Home = None) -> None:
        await asyncio.to_thread(_sync.Volume.remove, name, home=home)

    @staticmethod
    async def for_mount(config: MountConfig, *, home: Home = None) -> VolumeHandle:
        return VolumeHandle(await asyncio.to_thread(_sync.Volume.for_mount, config, home=home))

    bind = staticmethod(_sync.Volume.bind)
    named = staticmethod(_sync.Volume.named)
    tmpfs = staticmethod(_sync.Volume.tmpfs)
    disk = staticmethod(_sync.Volume.disk)
