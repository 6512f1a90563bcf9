"""The synchronous API: the same names as the package's async API, for plain (non-async) code and fixtures.

    from pytest_microsandbox.sync import Volume
    vol = Volume.create("pip-cache", quota_mib=1024)
    vol.fs.write("hello.txt", b"hi")

Each name is imported on first use, so that ``msb volume ls`` does not load the sandbox machinery.
"""

from __future__ import annotations

from pytest_microsandbox._lazy import lazy_names

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:  # what the names are, for type checkers and readers
    from pytest_microsandbox.agent import ExecResult, GuestFs, GuestFsEntry
    from pytest_microsandbox.images import CachedImage, ImageConfig
    from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, NamedVolumeMode, VolumeKind
    from pytest_microsandbox.sandbox import LastExec, Sandbox, VmOptions
    from pytest_microsandbox.store import ProcessIdentity, SandboxRecord
    from pytest_microsandbox.volumes._fs import FsEntry, FsEntryKind, FsMetadata, VolumeFs
    from pytest_microsandbox.volumes._volume import Volume, VolumeHandle

# Where each name is defined (the package's async names start from this table).
SYNC_HOMES = {
    "CachedImage": "pytest_microsandbox.images",
    "DiskImageFormat": "pytest_microsandbox.mounts",
    "ExecResult": "pytest_microsandbox.agent",
    "FsEntry": "pytest_microsandbox.volumes._fs",
    "FsEntryKind": "pytest_microsandbox.volumes._fs",
    "FsMetadata": "pytest_microsandbox.volumes._fs",
    "GuestFs": "pytest_microsandbox.agent",
    "GuestFsEntry": "pytest_microsandbox.agent",
    "ImageConfig": "pytest_microsandbox.images",
    "LastExec": "pytest_microsandbox.sandbox",
    "MountConfig": "pytest_microsandbox.mounts",
    "MountKind": "pytest_microsandbox.mounts",
    "NamedVolumeMode": "pytest_microsandbox.mounts",
    "ProcessIdentity": "pytest_microsandbox.store",
    "Sandbox": "pytest_microsandbox.sandbox",
    "SandboxRecord": "pytest_microsandbox.store",
    "VmOptions": "pytest_microsandbox.sandbox",
    "Volume": "pytest_microsandbox.volumes._volume",
    "VolumeFs": "pytest_microsandbox.volumes._fs",
    "VolumeHandle": "pytest_microsandbox.volumes._volume",
    "VolumeKind": "pytest_microsandbox.mounts",
}
__all__ = [
    "CachedImage",
    "DiskImageFormat",
    "ExecResult",
    "FsEntry",
    "FsEntryKind",
    "FsMetadata",
    "GuestFs",
    "GuestFsEntry",
    "ImageConfig",
    "LastExec",
    "MountConfig",
    "MountKind",
    "NamedVolumeMode",
    "ProcessIdentity",
    "Sandbox",
    "SandboxRecord",
    "VmOptions",
    "Volume",
    "VolumeFs",
    "VolumeHandle",
    "VolumeKind",
]  # the errors are the package's own: ``pytest_microsandbox.errors``


__getattr__, __dir__ = lazy_names(__name__, SYNC_HOMES)
