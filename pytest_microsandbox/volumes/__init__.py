"""Named volumes: directories (or ext4 disk images) under ``<home>/volumes``, recorded in the store.

The names load on first use, so the sync API and ``msb volume`` pay neither for the async faces (asyncio) nor, until
a volume's files are touched, for ``VolumeFs``.
"""

from __future__ import annotations

from pytest_microsandbox._lazy import lazy_names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:
    from pytest_microsandbox.mounts import VolumeKind
    from pytest_microsandbox.volumes._aio import Volume, VolumeFs, VolumeHandle
    from pytest_microsandbox.volumes._fs import FsEntry, FsEntryKind, FsMetadata

__all__ = ["FsEntry", "FsEntryKind", "FsMetadata", "Volume", "VolumeFs", "VolumeHandle", "VolumeKind"]

_HOMES = {
    "FsEntry": "pytest_microsandbox.volumes._fs",
    "FsEntryKind": "pytest_microsandbox.volumes._fs",
    "FsMetadata": "pytest_microsandbox.volumes._fs",
    "Volume": "pytest_microsandbox.volumes._aio",
    "VolumeFs": "pytest_microsandbox.volumes._aio",
    "VolumeHandle": "pytest_microsandbox.volumes._aio",
    "VolumeKind": "pytest_microsandbox.mounts",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES)
