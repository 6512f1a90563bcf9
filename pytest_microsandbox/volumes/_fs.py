"""``VolumeFs``: host-side file access to a volume's directory, confined beneath its root (no VM needed)."""

from __future__ import annotations

import enum
import errno
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from pytest_microsandbox._tree import remove_tree
from pytest_microsandbox.errors import InvalidConfigError, PathEscapeError, QuotaExceededError
from pytest_microsandbox.volumes._resolve import Resolver, join, split_relative

_FILE_MODE = 0o644
_DIR_MODE = 0o755


class FsEntryKind(enum.StrEnum):
    """What a path in a volume is: a file, a directory, a symlink or something else (a fifo, a socket, a device)."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    OTHER = "other"

    @classmethod
    def of(cls, mode: int) -> FsEntryKind:
        """The kind of a ``st_mode``."""
        if stat_mod.S_ISREG(mode):
            return cls.FILE
        if stat_mod.S_ISDIR(mode):
            return cls.DIRECTORY
        if stat_mod.S_ISLNK(mode):
            return cls.SYMLINK
        return cls.OTHER


@dataclass(frozen=True, slots=True)
class FsEntry:
    """An entry of ``VolumeFs.list``: its path relative to the volume root, kind, size in bytes, permission bits
    and modification time (seconds since the epoch)."""

    path: str
    kind: FsEntryKind
    size: int
    mode: int
    modified: float | None


@dataclass(frozen=True, slots=True)
class FsMetadata:
    """What ``VolumeFs.stat`` says of a path: kind, size in bytes, permission bits, whether its owner may not write
    it, and its modification and creation times (seconds since the epoch; None where not known)."""

    kind: FsEntryKind
    size: int
    mode: int
    readonly: bool
    modified: float | None
    created: float | None


class VolumeFs:
    """File operations on a volume. Paths are relative to the volume root; none may leave it.

    With ``quota_mib``, what these writes allocate is charged to the volume's quota account, the one its servers
    in running sandboxes charge (``_vmcore.fs.quota``): a write that does not fit raises ``QuotaExceededError``
    before anything is changed. While no sandbox serves the volume, each write measures the tree first.
    """

    def __init__(self, root: str | os.PathLike[str], *, quota_mib: int | None = None,
                 use_openat2: bool | None = None) -> None:
        self._resolver = Resolver(root, use_openat2=use_openat2)
        self._quota_mib = quota_mib

    @property
    def root(self) -> str:
        """The host directory every path is relative to."""
        return self._resolver.root_path

    # -- helpers ----------------------------------------------------------------------------------------------------

    @contextmanager
    def _account(self) -> Iterator[_Account | None]:
        if self._quota_mib is None:
            yield None
            return
        account = _Account(self.root, self._quota_mib)
        try:
            yield account
        finally:
            account.close()

    @contextmanager
    def _fd(self, parts: tuple[str, ...], flags: int, mode: int = _FILE_MODE) -> Iterator[int]:
        root = self._resolver.open_root()
        try:
            fd = self._resolver.open(root, parts, flags, mode)
        except OSError as err:
            if err.errno == errno.ENXIO:  # a fifo without a reader, a socket: opened non-blocking, never waited on
                raise InvalidConfigError(f"{'/'.join(parts)!r} is not a regular file") from None
            raise
        finally:
            os.close(root)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _parent(self, path: str) -> Iterator[tuple[int, str]]:
        """The parent directory's descriptor and the leaf name of a path that must lie below the root."""
        parts = split_relative(path)
        if not parts:
            raise InvalidConfigError(f"{path!r} names the volume root; this operation needs a path below it")
        with self._fd(parts[:-1], os.O_PATH | os.O_DIRECTORY) as parent:
            yield parent, parts[-1]

    @contextmanager
    def _own_file(self, parts: tuple[str, ...], path: str, mode: int) -> Iterator[tuple[int, os.stat_result]]:
        """A regular file to write, and its stat. A file with other hard links (maybe made on the host, to a file
        outside the volume) is replaced by a new file of its own, never written through."""
        with self._fd(parts, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, mode) as fd:
            st = _require_regular(fd, path)
            if st.st_nlink <= 1:
                yield fd, st
                return
        with self._parent(path) as (parent, leaf):
            os.unlink(leaf, dir_fd=parent)
        with self._fd(parts, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK, mode) as fd:
            yield fd, _require_regular(fd, path)

    def _mkdirs(self, parts: tuple[str, ...], account: _Account | None = None) -> None:
        root = self._resolver.open_root()
        try:
            for depth in range(1, len(parts) + 1):
                parent = self._resolver.open(root, parts[: depth - 1], os.O_PATH | os.O_DIRECTORY)
                name = parts[depth - 1]
                try:
                    if account is not None:
                        account.made(join(parts[:depth]), parent, name, partial(os.mkdir, name, _DIR_MODE,
                                                                                dir_fd=parent))
                    else:
                        os.mkdir(name, _DIR_MODE, dir_fd=parent)
                except FileExistsError:
                    pass
                finally:
                    os.close(parent)
            if parts:  # the last one must now be a directory (or a symlink to one) beneath the root
                os.close(self._resolver.open(root, parts, os.O_PATH | os.O_DIRECTORY))
        finally:
            os.close(root)

    # -- reading ----------------------------------------------------------------------------------------------------

    def read(self, path: str) -> bytes:
        """The contents of a regular file."""
        with self._fd(split_relative(path), os.O_RDONLY | os.O_NONBLOCK) as fd:
            _require_regular(fd, path)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The contents of a regular file, decoded."""
        return self.read(path).decode(encoding)

    def list(self, path: str = "") -> list[FsEntry]:
        """The entries directly inside a directory, sorted by name; symlinks are listed, not followed."""
        parts = split_relative(path)
        with self._fd(parts, os.O_RDONLY | os.O_DIRECTORY) as fd:
            entries = []
            with os.scandir(fd) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    entries.append(
                        FsEntry(
                            path=join((*parts, entry.name)),
                            kind=FsEntryKind.of(st.st_mode),
                            size=st.st_size,
                            mode=stat_mod.S_IMODE(st.st_mode),
                            modified=st.st_mtime,
                        )
                    )
        return sorted(entries, key=lambda e: e.path)

    def stat(self, path: str) -> FsMetadata:
        """Metadata of a path itself (a symlink reports as a symlink)."""
        parts = split_relative(path)
        if parts:
            with self._parent(path) as (parent, leaf):
                st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        else:
            with self._fd(parts, os.O_PATH) as fd:
                st = os.fstat(fd)
        return FsMetadata(
            kind=FsEntryKind.of(st.st_mode),
            size=st.st_size,
            mode=stat_mod.S_IMODE(st.st_mode),
            readonly=not st.st_mode & stat_mod.S_IWUSR,
            modified=st.st_mtime,
            created=getattr(st, "st_birthtime", None),
        )

    def exists(self, path: str) -> bool:
        """True if the path exists beneath the root (symlinks followed while they stay beneath it)."""
        try:
            with self._fd(split_relative(path), os.O_PATH):
                return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as err:
            if err.errno == errno.ELOOP:
                return False
            raise

    # -- writing ----------------------------------------------------------------------------------------------------

    def write(self, path: str, data: bytes) -> None:
        """Create or replace a file (mode 0o644), creating missing parent directories."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        parts = split_relative(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "the volume root is a directory", path)
        with self._account() as account:
            self._mkdirs(parts[:-1], account)
            reserved, fresh = self._reserve_file(account, parts, path, len(data))
            with self._own_file(parts, path, _FILE_MODE) as (fd, st):
                os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if account is not None:
                    account.settle_file(reserved, st, fd, fresh)

    def mkdir(self, path: str) -> None:
        """Create a directory and any missing parents (like ``mkdir -p``)."""
        parts = split_relative(path)
        with self._account() as account:
            self._mkdirs(parts, account)

    def remove_file(self, path: str) -> None:
        """Remove a file or a symlink (never what a symlink points to)."""
        with self._account() as account, self._parent(path) as (parent, leaf):
            freed = account.freed_by(parent, leaf) if account is not None else 0
            os.unlink(leaf, dir_fd=parent)
            if account is not None:
                account.settle(0, -freed)

    def _reserve_file(self, account: _Account | None, parts: tuple[str, ...], path: str,
                      size: int) -> tuple[int, bool]:
        """Reserve for replacing the file at ``parts`` with ``size`` bytes (its old blocks count as given back);
        returns the reservation and whether the file is new."""
        if account is None:
            return 0, False
        with self._parent(path) as (parent, leaf):
            try:
                old = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                old = None
        need = account.round_up(size) + account.block + (account.inode_bytes if old is None else 0)
        if old is not None and stat_mod.S_ISREG(old.st_mode) and old.st_nlink == 1:
            need = max(0, need - old.st_blocks * 512)
        if not account.reserve(need):
            raise QuotaExceededError(path, account.quota_mib)
        return need, old is None or not (stat_mod.S_ISREG(old.st_mode) and old.st_nlink == 1)

    def remove_dir(self, path: str) -> None:
        """Remove a directory and everything in it; never the volume root."""
        with self._account() as account, self._parent(path) as (parent, leaf):
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
            if not stat_mod.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            freed = account.freed_by(parent, leaf) if account is not None else 0
            # Iterative and descriptor-based: any depth, never follows a symlink, never opens a FIFO.
            remove_tree(leaf, dir_fd=parent)
            if account is not None:
                account.settle(0, -freed)

    def rename(self, from_: str, to: str) -> None:
        """Move a file or directory within the volume, replacing what ``to`` names (as ``os.rename``)."""
        with self._account() as account, self._parent(from_) as (src_dir, src_leaf), \
                self._parent(to) as (dst_dir, dst_leaf):
            freed = account.freed_by(dst_dir, dst_leaf) if account is not None else 0
            os.rename(src_leaf, dst_leaf, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
            if account is not None:
                account.settle(0, -freed)

    def copy(self, from_: str, to: str) -> None:
        """Copy a file's contents and mode to a new or replaced file (parents created)."""
        src_parts, dst_parts = split_relative(from_), split_relative(to)
        if not dst_parts:
            raise IsADirectoryError(errno.EISDIR, "the volume root is a directory", to)
        with self._account() as account, self._fd(src_parts, os.O_RDONLY | os.O_NONBLOCK) as src:
            st = _require_regular(src, from_)
            self._mkdirs(dst_parts[:-1], account)
            reserved, fresh = self._reserve_file(account, dst_parts, to, st.st_size)
            # Truncate only once the destination is known not to be the source (or a hard link to it).
            with self._own_file(dst_parts, to, stat_mod.S_IMODE(st.st_mode)) as (dst, dst_st):
                if (dst_st.st_dev, dst_st.st_ino) == (st.st_dev, st.st_ino):
                    if account is not None:
                        account.settle(reserved, 0)
                    return
                os.ftruncate(dst, 0)
                remaining = st.st_size
                while remaining > 0:
                    copied = os.copy_file_range(src, dst, remaining)
                    if copied == 0:
                        break
                    remaining -= copied
                os.fchmod(dst, stat_mod.S_IMODE(st.st_mode))
                if account is not None:
                    account.settle_file(reserved, dst_st, dst, fresh)


class _Account:
    """The volume's quota account, seen from host-side writes."""

    def __init__(self, root: str, quota_mib: int) -> None:
        from _vmcore.fs.quota import BLOCK, INODE_BYTES, QuotaAccount

        self.quota_mib = quota_mib
        self.inode_bytes = INODE_BYTES
        self.block = BLOCK
        self._account = QuotaAccount(root, quota_mib << 20)

    def round_up(self, n: int) -> int:
        return (n + self.block - 1) // self.block * self.block

    def reserve(self, n: int) -> bool:
        return self._account.reserve(n)

    def settle(self, reserved: int, actual: int) -> None:
        self._account.settle(reserved, actual)

    def settle_file(self, reserved: int, before: os.stat_result, fd: int, fresh: bool) -> None:
        """A file written through ``fd`` that had ``before``'s blocks; ``fresh``: its inode was made for it."""
        after = os.fstat(fd).st_blocks * 512
        self.settle(reserved, after - (0 if fresh else before.st_blocks * 512) + (self.inode_bytes if fresh else 0))

    def made(self, path: str, parent: int, name: str, make: Callable[[], None]) -> None:
        """Make one inode (``make``), charged what it costs; nothing is made when it does not fit."""
        need = self.inode_bytes + self.block
        if not self.reserve(need):
            raise QuotaExceededError(path, self.quota_mib)
        try:
            make()
        except BaseException:
            self.settle(need, 0)
            raise
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        self.settle(need, st.st_blocks * 512 + self.inode_bytes)

    def freed_by(self, parent: int, name: str) -> int:
        """What removing ``name`` (a whole tree, for a directory) gives back: 0 while other links keep it."""
        from _vmcore.fs.quota import cost, tree_cost

        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        if stat_mod.S_ISDIR(st.st_mode):
            return cost(st) + tree_cost(name, dir_fd=parent)
        return cost(st) if st.st_nlink == 1 else 0

    def close(self) -> None:
        self._account.close()


def _require_regular(fd: int, path: str) -> os.stat_result:
    """Only regular files are read or written (a fifo would block, a device is never ours to open)."""
    st = os.fstat(fd)
    if stat_mod.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat_mod.S_ISREG(st.st_mode):
        raise InvalidConfigError(f"{path!r} is not a regular file ({FsEntryKind.of(st.st_mode)})")
    return st


__all__ = ["FsEntry", "FsEntryKind", "FsMetadata", "PathEscapeError", "VolumeFs"]
