"""Every error pytest-microsandbox raises, one typed hierarchy.

MicrosandboxError
├── InvalidConfigError          bad names, options, sizes, mount specs
├── VolumeError
│   ├── VolumeAlreadyExistsError    "volume already exists: NAME"
│   ├── VolumeNotFoundError         "volume not found: NAME"
│   ├── VolumeInUseError            "volume NAME is attached to active sandbox SB"
│   ├── PathEscapeError             "path escapes volume root"
│   └── QuotaExceededError          a host-side write past the volume's quota (an OSError, ENOSPC)
├── SandboxError
│   ├── SandboxNotFoundError
│   ├── BootError                   the guest died or never became ready (carries the console tail)
│   ├── ExecError                   a command could not be run (not: it ran and failed)
│   │   └── ExecTimeoutError            it ran past its timeout and was killed (carries the partial result)
│   └── AgentError                  the guest agent connection broke or refused a request
│       └── AgentTimeoutError           a file or control request got no answer in time
├── ImageError
└── KvmUnavailableError         this host cannot run the vm backend (the message says why)
"""

from __future__ import annotations

import errno


class MicrosandboxError(Exception):
    """Base of every error raised by pytest-microsandbox."""


class InvalidConfigError(MicrosandboxError, ValueError):
    """A name, option, size or mount specification is not valid."""


class VolumeError(MicrosandboxError):
    """A volume operation failed."""


class VolumeAlreadyExistsError(VolumeError):
    """A volume of that name exists already."""

    def __init__(self, name: str) -> None:
        super().__init__(f"volume already exists: {name}")
        self.name = name


class VolumeNotFoundError(VolumeError):
    """No volume of that name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"volume not found: {name}")
        self.name = name


class VolumeInUseError(VolumeError):
    """A live sandbox mounts the volume (or a process holds its disk image)."""

    def __init__(self, name: str, sandbox: str) -> None:
        super().__init__(f"volume {name} is attached to active sandbox {sandbox}")
        self.name = name
        self.sandbox = sandbox


class PathEscapeError(VolumeError, PermissionError):
    """A path would leave the volume's root (``..`` above it, or a symlink out of it)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path escapes volume root: {path!r}")
        self.path = path


class QuotaExceededError(VolumeError, OSError):
    """A host-side write would take a volume past its quota (errno ENOSPC, as a sandbox sees it)."""

    def __init__(self, path: str, quota_mib: int) -> None:
        super().__init__(errno.ENOSPC, f"volume quota of {quota_mib} MiB exceeded writing {path!r}")
        self.path = path


class SandboxError(MicrosandboxError):
    """A sandbox operation failed."""


class SandboxNotFoundError(SandboxError):
    """No sandbox of that name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"sandbox not found: {name}")
        self.name = name


class BootError(SandboxError):
    """The guest did not come up; ``console_tail`` holds the last lines it printed."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        text = message if not console_tail else f"{message}\n--- guest console (tail) ---\n{console_tail}"
        super().__init__(text)
        self.console_tail = console_tail


class ExecError(SandboxError):
    """A command could not be run in the guest (a non-zero exit is a result, not this error)."""


class ExecTimeoutError(ExecError, TimeoutError):
    """A command ran past its timeout and was killed; ``result`` holds what it printed until then."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class AgentError(SandboxError):
    """The guest agent connection broke, or the agent refused a request (``code`` is its error code)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class AgentTimeoutError(AgentError, TimeoutError):
    """A file or control request got no answer within its timeout (a guest that is wedged or far too busy)."""


class ImageError(MicrosandboxError):
    """An image could not be resolved, pulled, verified or unpacked."""


class KvmUnavailableError(MicrosandboxError):
    """This host cannot run the vm backend; the message names the reason and the opt-in."""
