"""Walk and delete directory trees of any depth: iteratively, from directory descriptors, never following a symlink.

Volume and image trees are shaped by untrusted code: a guest can nest directories thousands deep (past Python's
recursion limit and past PATH_MAX) and put FIFOs or devices anywhere. So nothing here recurses, every call names one
entry relative to an open directory, only what ``lstat`` called a directory is ever opened (``O_DIRECTORY |
O_NOFOLLOW | O_NONBLOCK``: a swap to a symlink or a FIFO fails the open instead of following or blocking), and at most
two descriptors are open at a time: going back up re-opens ``..`` and checks it is the directory we came from, so a
directory moved mid-walk stops the walk rather than leading it out of the tree.

Deleting also gives back owner ``rwx`` on each directory it enters: files a guest makes through our FUSE server are
the host user's, and a guest's ``chmod 0555`` (or ``000``) must not make its volume undeletable.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_REMOVE_ATTEMPTS = 8  # another process removing the same tree makes ours restart; each restart sees less


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry below the walk's top: its names from the top down, its ``lstat``, and the open directory that holds
    it (valid only until the walk moves on)."""

    parts: tuple[str, ...]
    stat: os.stat_result
    dir_fd: int

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)


@dataclass(slots=True)
class _Level:
    parts: tuple[str, ...]
    stat: os.stat_result  # of the directory itself, to recognise it when we come back up through ``..``
    pending: list[tuple[str, os.stat_result]]  # children not visited yet, last one next


def walk(top: str | os.PathLike[str], *, dir_fd: int | None = None) -> Iterator[TreeEntry]:
    """Every entry below ``top`` (not ``top`` itself), parents before children, names sorted within a directory.

    Symlinks are reported, never followed; ``top`` must be a directory and not a symlink.
    """
    for entry, leaving in _walk(top, dir_fd):
        if not leaving:
            yield entry


def remove_tree(top: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
    """Delete ``top`` and everything below it (a symlink or file at ``top`` is unlinked, never followed).

    A ``top`` that is already gone is fine, and so is another process deleting the same tree at the same time.
    """
    for _ in range(_REMOVE_ATTEMPTS - 1):
        try:
            return _remove_once(top, dir_fd)
        except FileNotFoundError:
            continue  # something below vanished under us (a concurrent remover): walk what is left
    _remove_once(top, dir_fd)


def _remove_once(top: str | os.PathLike[str], dir_fd: int | None) -> None:
    try:
        st = os.stat(top, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        for entry, leaving in _walk(top, dir_fd, unlock=True):
            if leaving:
                _ignore_missing(os.rmdir, entry.name, entry.dir_fd)
            elif not entry.is_dir:
                _ignore_missing(os.unlink, entry.name, entry.dir_fd)
        _ignore_missing(os.rmdir, top, dir_fd)
    else:
        _ignore_missing(os.unlink, top, dir_fd)


def _ignore_missing(remove, name: str | os.PathLike[str], dir_fd: int | None) -> None:  # type: ignore[no-untyped-def]
    try:
        remove(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _walk(top: str | os.PathLike[str], dir_fd: int | None, *, unlock: bool = False) -> Iterator[tuple[TreeEntry, bool]]:
    """Pre-order entries ``(entry, False)``, and ``(directory, True)`` once a directory's children are done (its
    ``dir_fd`` is then the parent again, so the directory can be removed). ``unlock``: make each directory entered
    owner-``rwx`` first."""
    current = _open_dir(top, dir_fd, None, unlock)
    assert current is not None
    try:
        top_stat = os.fstat(current)
        levels = [_Level((), top_stat, _children(current))]
        while levels:
            level = levels[-1]
            if level.pending:
                name, st = level.pending.pop()
                entry = TreeEntry((*level.parts, name), st, current)
                yield entry, False
                if entry.is_dir and (child := _open_dir(name, current, st, unlock)) is not None:
                    os.close(current)
                    current = child
                    levels.append(_Level(entry.parts, st, _children(current)))
                continue
            levels.pop()
            if levels:
                parent = os.open("..", _DIR_FLAGS, dir_fd=current)
                os.close(current)
                current = parent
                if not _same_file(os.fstat(current), levels[-1].stat):
                    raise OSError(errno.ESTALE, "a directory was moved during the walk", "/".join(level.parts))
                yield TreeEntry(level.parts, level.stat, current), True
    finally:
        os.close(current)


def _children(fd: int) -> list[tuple[str, os.stat_result]]:
    found = []
    with os.scandir(fd) as it:
        for entry in it:
            try:
                found.append((entry.name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
    found.sort(reverse=True)  # popped from the end: visited in name order
    return found


def _open_dir(name: str | os.PathLike[str], dir_fd: int | None, expected: os.stat_result | None,
              unlock: bool) -> int | None:
    """The directory ``lstat`` saw as ``name`` (``expected``); None when it has vanished or been swapped for something
    else. ``unlock``: one we may not open or change is made owner-``rwx`` (we are deleting it)."""
    try:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except PermissionError:
            if not unlock:
                raise
            _grant_owner_rwx(name, dir_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if expected is not None and err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    st = os.fstat(fd)
    if expected is not None and not _same_file(st, expected):
        os.close(fd)
        return None
    if unlock and st.st_mode & 0o700 != 0o700:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    return fd


def _grant_owner_rwx(name: str | os.PathLike[str], dir_fd: int | None) -> None:
    """chmod u+rwx a directory we cannot open: through an ``O_PATH`` handle (it needs no permission on the directory
    itself, and a symlink fails ``O_DIRECTORY``), so the very inode looked at is the one changed."""
    handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{handle}", stat.S_IMODE(os.fstat(handle).st_mode) | 0o700)
    finally:
        os.close(handle)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
