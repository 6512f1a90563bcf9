"""Resolve paths beneath a volume root without ever leaving it.

With ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` the kernel does the confinement. Without it we walk one
component at a time from held directory descriptors, each opened ``O_NOFOLLOW``, and resolve symlinks ourselves by the
same rules (absolute targets and ``..`` above the root escape). Either way a directory swapped for a symlink between a
check and its use cannot redirect us: nothing is ever re-resolved by path from outside the root.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections import deque

from _vmcore import beneath
from pytest_microsandbox.errors import InvalidConfigError, PathEscapeError

_MAX_SYMLINKS = 40
_ESCAPE_ERRNOS = {errno.EXDEV}


def split_relative(path: str) -> tuple[str, ...]:
    """Lexically normalise a volume path into components; ``..`` above the root escapes.

    A leading ``/`` names the volume's root, as in the seeds (``fs.write("/requirements.txt", ...)``): paths are
    always relative to the volume, never to the host.
    """
    if not isinstance(path, str):
        raise InvalidConfigError(f"volume paths are str, not {type(path).__name__}")
    if "\0" in path:
        raise InvalidConfigError("volume paths must not contain NUL bytes")
    try:  # names that are not UTF-8 (a guest can make them) arrive as surrogate escapes, as os.listdir gives them
        os.fsencode(path)
    except UnicodeEncodeError:
        raise InvalidConfigError(f"{path!r} is no file name: it holds a character no file name can") from None
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathEscapeError(path)
            parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


class Resolver:
    """Opens paths beneath one root directory descriptor."""

    def __init__(self, root: str | os.PathLike[str], *, use_openat2: bool | None = None) -> None:
        self.root_path = os.fspath(root)
        self.use_openat2 = beneath.available() if use_openat2 is None else use_openat2

    def open_root(self) -> int:
        return os.open(self.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open(self, root_fd: int, parts: tuple[str, ...], flags: int, mode: int = 0o644) -> int:
        """Open ``parts`` beneath ``root_fd``, following symlinks only while they stay beneath it."""
        shown = "/".join(parts) or "."
        if self.use_openat2:
            try:
                return beneath.openat2(
                    root_fd,
                    shown,
                    flags | os.O_CLOEXEC,
                    mode if flags & os.O_CREAT else 0,
                    beneath.RESOLVE_BENEATH | beneath.RESOLVE_NO_MAGICLINKS,
                )
            except OSError as err:
                if err.errno in _ESCAPE_ERRNOS:
                    raise PathEscapeError(shown) from None
                raise
        return self._walk(root_fd, parts, flags, mode, shown)

    # -- the fallback walk ---------------------------------------------------------------------------------------

    def _walk(self, root_fd: int, parts: tuple[str, ...], flags: int, mode: int, shown: str) -> int:
        stack = [os.dup(root_fd)]  # stack[-1] is the current directory; popping it is '..'
        pending = deque(parts)
        links = 0
        try:
            while pending:
                name = pending.popleft()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) == 1:
                        raise PathEscapeError(shown)
                    os.close(stack.pop())
                    continue
                last = not pending
                try:
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
                except FileNotFoundError:
                    if last and flags & os.O_CREAT:
                        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                    raise
                st = os.fstat(fd)
                if _is_symlink(st.st_mode):
                    os.close(fd)
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), shown)
                    target = os.readlink(name, dir_fd=stack[-1])
                    if target.startswith("/"):
                        raise PathEscapeError(shown)
                    pending.extendleft(reversed(target.split("/")))
                    continue
                if last:
                    os.close(fd)
                    # O_NOFOLLOW: had the name been swapped for a symlink since the check, this fails with ELOOP.
                    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=stack[-1])
                if not _is_dir(st.st_mode):
                    os.close(fd)
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), shown)
                stack.append(fd)
            # The path named the root itself (or a directory reached through '..' and symlinks).
            return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=stack[-1])
        finally:
            for fd in stack:
                os.close(fd)


def _is_symlink(mode: int) -> bool:
    return (mode & 0o170000) == 0o120000


def _is_dir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def join(parts: tuple[str, ...]) -> str:
    return posixpath.join(*parts) if parts else ""
