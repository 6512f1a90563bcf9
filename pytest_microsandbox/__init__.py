"""pytest-microsandbox: a real microVM for every test.

The package's names are the async API of the seeds (``await Volume.create(...)``) and everything it returns or raises;
``pytest_microsandbox.sync`` has the same names with blocking methods.

Each name is imported on first use, so that ``msb`` and the plugin pay only for what they touch (the sandbox
machinery, asyncio and the image code stay unimported by ``msb volume ls``).
"""

from __future__ import annotations

from pytest_microsandbox._lazy import lazy_names
from pytest_microsandbox.sync import SYNC_HOMES

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:  # what the names are, for type checkers and readers
    from pytest_microsandbox.agent import ExecResult, GuestFsEntry
    from pytest_microsandbox.errors import (
        AgentError,
        AgentTimeoutError,
        BootError,
        ExecError,
        ExecTimeoutError,
        GuestFileExistsError,
        GuestFileNotFoundError,
        GuestIsADirectoryError,
        GuestNotADirectoryError,
        GuestOSError,
        GuestPermissionError,
        ImageError,
        InvalidConfigError,
        KvmUnavailableError,
        MicrosandboxError,
        PathEscapeError,
        QuotaExceededError,
        SandboxAlreadyExistsError,
        SandboxError,
        SandboxNotFoundError,
        VolumeAlreadyExistsError,
        VolumeError,
        VolumeInUseError,
        VolumeNotFoundError,
    )
    from pytest_microsandbox.images import CachedImage, ImageConfig
    from pytest_microsandbox.mounts import DiskImageFormat, MountConfig, MountKind, NamedVolumeMode
    from pytest_microsandbox.sandbox import LastExec, VmOptions
    from pytest_microsandbox.sandbox._aio import GuestFs, Sandbox
    from pytest_microsandbox.store import ProcessIdentity, SandboxRecord
    from pytest_microsandbox.volumes import (
        FsEntry,
        FsEntryKind,
        FsMetadata,
        Volume,
        VolumeFs,
        VolumeHandle,
        VolumeKind,
    )

    __version__: str

__all__ = [
    "AgentError",
    "AgentTimeoutError",
    "BootError",
    "CachedImage",
    "DiskImageFormat",
    "ExecError",
    "ExecResult",
    "ExecTimeoutError",
    "FsEntry",
    "FsEntryKind",
    "FsMetadata",
    "GuestFileExistsError",
    "GuestFileNotFoundError",
    "GuestFs",
    "GuestFsEntry",
    "GuestIsADirectoryError",
    "GuestNotADirectoryError",
    "GuestOSError",
    "GuestPermissionError",
    "ImageConfig",
    "ImageError",
    "InvalidConfigError",
    "KvmUnavailableError",
    "LastExec",
    "MicrosandboxError",
    "MountConfig",
    "MountKind",
    "NamedVolumeMode",
    "PathEscapeError",
    "ProcessIdentity",
    "QuotaExceededError",
    "Sandbox",
    "SandboxAlreadyExistsError",
    "SandboxError",
    "SandboxNotFoundError",
    "SandboxRecord",
    "VmOptions",
    "Volume",
    "VolumeAlreadyExistsError",
    "VolumeError",
    "VolumeFs",
    "VolumeHandle",
    "VolumeInUseError",
    "VolumeKind",
    "VolumeNotFoundError",
    "__version__",
]

# Where each name is defined: as in ``sync``, but the classes with an async face take it; every name of __all__
# that ends in Error is a class of pytest_microsandbox.errors.
_HOMES = {
    **SYNC_HOMES,
    "GuestFs": "pytest_microsandbox.sandbox._aio",
    "Sandbox": "pytest_microsandbox.sandbox._aio",
    "Volume": "pytest_microsandbox.volumes._aio",
    "VolumeFs": "pytest_microsandbox.volumes._aio",
    "VolumeHandle": "pytest_microsandbox.volumes._aio",
}


def _version() -> str:
    """The installed distribution's version; ``0+unknown`` for a source tree that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-microsandbox")
    except PackageNotFoundError:
        return "0+unknown"


__getattr__, __dir__ = lazy_names(
    __name__, {**{name: "pytest_microsandbox.errors" for name in __all__ if name.endswith("Error")}, **_HOMES},
    made={"__version__": _version})
