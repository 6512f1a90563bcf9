"""pytest-microsandbox: a real microVM for every test.

The package's names are the async API of the seeds (``await Volume.create(...)``); ``pytest_microsandbox.sync`` has
the same names with blocking methods.
"""

from pytest_microsandbox.errors import (
    AgentError,
    BootError,
    ExecError,
    ExecTimeoutError,
    ImageError,
    InvalidConfigError,
    KvmUnavailableError,
    MicrosandboxError,
    PathEscapeError,
    SandboxError,
    SandboxNotFoundError,
    VolumeAlreadyExistsError,
    VolumeError,
    VolumeInUseError,
    VolumeNotFoundError,
)
from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, NamedVolumeMode
from pytest_microsandbox.sandbox._aio import Sandbox
from pytest_microsandbox.volumes import FsEntry, FsEntryKind, FsMetadata, Volume, VolumeFs, VolumeHandle, VolumeKind

__all__ = [
    "AgentError",
    "BootError",
    "DiskImageFormat",
    "ExecError",
    "ExecTimeoutError",
    "FsEntry",
    "FsEntryKind",
    "FsMetadata",
    "ImageError",
    "InvalidConfigError",
    "KvmUnavailableError",
    "MicrosandboxError",
    "MountConfig",
    "MountKind",
    "NamedVolumeMode",
    "PathEscapeError",
    "Sandbox",
    "SandboxError",
    "SandboxNotFoundError",
    "Volume",
    "VolumeAlreadyExistsError",
    "VolumeError",
    "VolumeFs",
    "VolumeHandle",
    "VolumeInUseError",
    "VolumeKind",
    "VolumeNotFoundError",
]
