"""Named volumes: directories (or ext4 disk images) under ``<home>/volumes``, recorded in the store."""

from pytest_microsandbox.mounts import VolumeKind
from pytest_microsandbox.volumes._aio import Volume, VolumeFs, VolumeHandle
from pytest_microsandbox.volumes._fs import FsEntry, FsEntryKind, FsMetadata

__all__ = ["FsEntry", "FsEntryKind", "FsMetadata", "Volume", "VolumeFs", "VolumeHandle", "VolumeKind"]
