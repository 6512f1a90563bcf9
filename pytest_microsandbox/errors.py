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
│   ├── SandboxNotFoundError        "sandbox not found: NAME"
│   ├── SandboxAlreadyExistsError   "sandbox already exists: NAME" (a live sandbox has that name)
│   ├── BootError                   the guest died or never became ready (carries the console tail)
│   ├── ExecError                   a command could not be run (not: it ran and failed)
│   │   └── ExecTimeoutError            it ran past its timeout and was killed (carries the partial result)
│   ├── AgentError                  the guest agent connection broke or refused a request
│   │   └── AgentTimeoutError           a file or control request got no answer in time
│   └── GuestOSError                a file (or boot) request failed in the guest with an errno (an OSError)
│       ├── GuestFileExistsError        EEXIST (also a FileExistsError)
│       ├── GuestFileNotFoundError      ENOENT (also a FileNotFoundError)
│       ├── GuestIsADirectoryError      EISDIR (also an IsADirectoryError)
│       ├── GuestNotADirectoryError     ENOTDIR (also a NotADirectoryError)
│       └── GuestPermissionError        EACCES, EPERM (also a PermissionError)
├── ImageError
└── KvmUnavailableError         this host cannot run the vm backend (the message says why)

The VMM core's own errors (``_vmcore.errors``) never reach a caller: the library maps them onto these where its public
API calls into it (``_error_boundary``: a boot failure is one ``BootError``).
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


class SandboxAlreadyExistsError(SandboxError):
    """A live sandbox has that name already (a stopped or dead one makes way)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"sandbox already exists: {name}")
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


class GuestOSError(SandboxError, OSError):
    """A request failed inside the guest with an errno: ``errno``, ``strerror`` and ``filename`` (the request, as
    ``read /etc/x``) say which. ``GuestOSError.for_errno`` picks the subclass the errno has."""

    @staticmethod
    def for_errno(code: int, message: str, request: str) -> GuestOSError:
        """The error for the guest's ``code``: a subclass that is also the built-in Python picks for that errno
        (FileNotFoundError for ENOENT, BrokenPipeError for EPIPE, ...), else GuestOSError itself."""
        return _guest_class_for(code)(code, message, request)


class GuestFileExistsError(GuestOSError, FileExistsError):
    """The guest path exists already (EEXIST)."""


class GuestFileNotFoundError(GuestOSError, FileNotFoundError):
    """The guest path does not exist (ENOENT)."""


class GuestIsADirectoryError(GuestOSError, IsADirectoryError):
    """The guest path is a directory where a file was expected (EISDIR)."""


class GuestNotADirectoryError(GuestOSError, NotADirectoryError):
    """A component of the guest path is not a directory (ENOTDIR)."""


class GuestPermissionError(GuestOSError, PermissionError):
    """The guest refused the request for lack of permission (EACCES, EPERM)."""


_GUEST_ERRNO_CLASSES: dict[int, type[GuestOSError]] = {
    errno.EEXIST: GuestFileExistsError,
    errno.ENOENT: GuestFileNotFoundError,
    errno.EISDIR: GuestIsADirectoryError,
    errno.ENOTDIR: GuestNotADirectoryError,
    errno.EACCES: GuestPermissionError,
    errno.EPERM: GuestPermissionError,
}
_GUEST_BUILTIN_CLASSES: dict[type[OSError], type[GuestOSError]] = {}


def _guest_class_for(code: int) -> type[GuestOSError]:
    """The named classes above, else one made (once) for the built-in ``OSError`` subclass Python raises for
    ``code`` (BlockingIOError, BrokenPipeError, TimeoutError, ...): ``except BrokenPipeError`` still works."""
    named = _GUEST_ERRNO_CLASSES.get(code)
    if named is not None:
        return named
    builtin = type(OSError(code, ""))
    if builtin is OSError:
        return GuestOSError
    made = _GUEST_BUILTIN_CLASSES.get(builtin)
    if made is None:
        made = type(f"Guest{builtin.__name__}", (GuestOSError, builtin), {"__doc__": f"{builtin.__doc__} (guest)"})
        _GUEST_BUILTIN_CLASSES[builtin] = made
    return made


class ImageError(MicrosandboxError):
    """An image could not be resolved, pulled, verified or unpacked."""


class KvmUnavailableError(MicrosandboxError):
    """This host cannot run the vm backend; the message names the reason and the opt-in."""
