"""The synchronous API: the same names as the package's async API, for plain (non-async) code and fixtures.

    from pytest_microsandbox.sync import Volume
    vol = Volume.create("pip-cache", quota_mib=1024)
    vol.fs.write("hello.txt", b"hi")
"""

from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, NamedVolumeMode, VolumeKind
from pytest_microsandbox.sandbox import LastExec, Sandbox
from pytest_microsandbox.volumes._fs import FsEntry, FsEntryKind, FsMetadata, VolumeFs
from pytest_microsandbox.volumes._sync import Volume, VolumeHandle

__all__ = [
    "DiskImageFormat",
    "FsEntry",
    "FsEntryKind",
    "FsMetadata",
    "LastExec",
    "MountConfig",
    "MountKind",
    "NamedVolumeMode",
    "Sandbox",
    "Volume",
    "VolumeFs",
    "VolumeHandle",
    "VolumeKind",
]
