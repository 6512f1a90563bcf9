"""pytest-microsandbox: a real microVM for every test."""

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
    VolumeAlreadyExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
)

__all__ = [
    "AgentError",
    "BootError",
    "ExecError",
    "ExecTimeoutError",
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
