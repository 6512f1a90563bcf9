"""pytest-microsandbox: a real microVM for every test."""

from pytest_microsandbox.errors import (
    BootError,
    ExecError,
    ImageError,
    InvalidConfigError,
    KvmUnavailableError,
    MicrosandboxError,
    PathEscapeError,
    SandboxError,
    VolumeAlreadyExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
)

__all__ = [
    "BootError",
    "ExecError",
    "ImageError",
    "InvalidConfigError",
    "KvmUnavailableError",
    "MicrosandboxError",
    "PathEscapeError",
    "SandboxError",
    "VolumeAlreadyExistsError",
    "VolumeInUseError",
    "VolumeNotFoundError",
]
