"""pytest-microsandbox: a real microVM for every test.

The package's names are the async API of the seeds (``await Volume.create(...)``); ``pytest_microsandbox.sync`` has
the same names with blocking methods.

Each name is imported on first use, so that ``msb`` and the plugin pay only for what they touch (the sandbox
machinery, asyncio and the image code stay unimported by ``msb volume ls``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:  # what the names are, for type checkers and readers
    from pytest_microsandbox.errors import (
        AgentError,
        AgentTimeoutError,
        BootError,
        ExecError,
        ExecTimeoutError,
        ImageError,
        InvalidConfigError,
        KvmUnavailableError,
        MicrosandboxError,
        PathEscapeError,
        QuotaExceededError,
        SandboxError,
        SandboxNotFoundError,
        VolumeAlreadyExistsError,
        VolumeError,
        VolumeInUseError,
        VolumeNotFoundError,
    )
    from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, NamedVolumeMode
    from pytest_microsandbox.sandbox._aio import Sandbox
    from pytest_microsandbox.volumes import (
        FsEntry,
        FsEntryKind,
        FsMetadata,
        Volume,
        VolumeFs,
        VolumeHandle,
        VolumeKind,
    )

__all__ = [
    "AgentError",
    "AgentTimeoutError",
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
    "QuotaExceededError",
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

# Where each name is defined (every other name of __all__ is an error class from pytest_microsandbox.errors).
_HOMES = {
    "DiskImageFormat": "pytest_microsandbox.mounts",
    "MountConfig": "pytest_microsandbox.mounts",
    "MountKind": "pytest_microsandbox.mounts",
    "NamedVolumeMode": "pytest_microsandbox.mounts",
    "Sandbox": "pytest_microsandbox.sandbox._aio",
    "FsEntry": "pytest_microsandbox.volumes",
    "FsEntryKind": "pytest_microsandbox.volumes",
    "FsMetadata": "pytest_microsandbox.volumes",
    "Volume": "pytest_microsandbox.volumes",
    "VolumeFs": "pytest_microsandbox.volumes",
    "VolumeHandle": "pytest_microsandbox.volumes",
    "VolumeKind": "pytest_microsandbox.volumes",
}


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOMES.get(name, "pytest_microsandbox.errors")), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
