"""Apply image layers (plain, gzip or zstd tar) onto a root directory, safely.

Every path is resolved *in root*, as the image's own processes would see it: ``..`` stops at the root, absolute
symlinks restart at the root, and each step is an ``*at`` call on a directory fd with ``O_NOFOLLOW``, so no entry
(``../../etc/x``, ``/abs``, a symlink ``a -> /`` then ``a/etc/x``, a hard link to ``/etc/passwd``) can touch a file
outside. Names that climb above the root lexically are refused outright, as containerd does.

Whiteouts (``.wh.NAME``) and opaque directories (``.wh..wh..opq``) remove what lower layers put there. Ownership,
full modes, device numbers and xattrs go to a RootMeta, not onto host files: host copies get only permission bits
(at least owner-readable, directories owner-writable), never setuid/setgid, and no device node is ever created on
the host; with ``allow_devices`` they are recorded for the disk builder to create inside the image.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._digest import HashingReader
from pytest_microsandbox.images._meta import EntryMeta, RootMeta

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40
_DIR_CACHE = 64  # open directory fds kept between entries (tar members come grouped by directory)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class UnpackStats:
    entries: int = 0
    whiteouts: int = 0
    devices_skipped: int = 0


def open_layer(stream: BinaryIO) -> BinaryIO:
    """Wrap a layer blob in the decompressor its magic bytes call for (gzip, zstd or none)."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[arg-type,type-var]
    head = buffered.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    return buffered


def split_path(name: str, what: str = "entry") -> list[str]:
    """Components of a tar member name, relative to the root; ImageError if ``..`` climbs above it."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ImageError(f"layer {what} {name!r} escapes the root")
            parts.pop()
        else:
            parts.append(part)
    return parts


class _Dir:
    """An open directory inside the root and its path as the image sees it."""

    def __init__(self, fd: int, parts: list[str]) -> None:
        self.fd = fd
        self.parts = parts

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)

    def child(self, name: str) -> str:
        return "/" + "/".join([*self.parts, name])


class LayerUnpacker:
    """Applies layers, bottom first, onto ``root`` (an empty directory we own), recording metadata in ``meta``."""

    def __init__(self, root: Path, meta: RootMeta, *, allow_devices: bool = False) -> None:
        self.root = root
        self.meta = meta
        self.allow_devices = allow_devices
        self._root_fd = os.open(root, _DIR_FLAGS)
        self._created: set[str] = set()
        # Parent directories already resolved, by their names in the layer. Valid until something is removed
        # or replaced (the only way a resolved path can change); evicted fds wait in _retired until the
        # current member is done with them.
        self._dirs: OrderedDict[tuple[str, ...], _Dir] = OrderedDict()
        self._retired: list[_Dir] = []
        if self.meta.get("/") is None:
            self.meta.set("/", EntryMeta(0, 0, stat.S_IFDIR | 0o755))

    def close(self) -> None:
        self._forget_dirs()
        self._close_retired()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> LayerUnpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layers -------------------------------------------------------------------------------------------
    def apply(self, blob: BinaryIO, label: str = "layer", diff_id: str | None = None) -> UnpackStats:
        """Apply one layer blob; with ``diff_id`` (from the image config) the uncompressed tar must hash to it."""
        stats = UnpackStats()
        self._created = set()
        try:
            content = HashingReader(open_layer(blob))
            with tarfile.open(fileobj=content, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    try:
                        self._apply_member(tar, member, stats)
                    finally:
                        self._close_retired()
            if diff_id is not None and (actual := content.finish()) != diff_id:
                raise ImageError(f"{label}: uncompressed content hashes to {actual}, not its diff_id {diff_id}")
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ImageError(f"{label}: no space left while unpacking") from None
            raise ImageError(f"{label}: cannot unpack: {err}") from None
        except Exception as err:  # zstandard raises its own ZstdError
            if type(err).__module__.startswith("zstandard") or "Zstd" in type(err).__name__:
                raise ImageError(f"{label}: cannot unpack: {err}") from None
            raise
        return stats

    def _apply_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, stats: UnpackStats) -> None:
        parts = split_path(member.name)
        if not parts:
            return  # the root itself ("./"): its metadata stays ours
        *parent_parts, base = parts
        if base.startswith(_WHITEOUT):
            stats.whiteouts += 1
            self._whiteout(parent_parts, base, member.name)
            return
        if (member.ischr() or member.isblk()) and not self.allow_devices:
            stats.devices_skipped += 1
            return
        self._place(tar, member, self._parent(parent_parts), base)
        stats.entries += 1

    def _place(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: _Dir, base: str) -> None:
        path = parent.child(base)
        existing = _lstat(base, parent.fd)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            self._remove(parent, base, existing)
        xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                  for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        perm = member.mode & 0o7777
        meta = EntryMeta(member.uid, member.gid, perm, None, xattrs)
        if member.isdir():
            if existing is None:
                os.mkdir(base, (perm & 0o777) | 0o700, dir_fd=parent.fd)
            else:
                fd = os.open(base, _DIR_FLAGS, dir_fd=parent.fd)
                try:
                    os.fchmod(fd, (perm & 0o777) | 0o700)
                finally:
                    os.close(fd)
            meta.mode |= stat.S_IFDIR
        elif member.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         (perm & 0o777) | 0o400, dir_fd=parent.fd)
            with os.fdopen(fd, "wb") as out:
                src = tar.extractfile(member)
                if src is not None:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.fchmod(out.fileno(), (perm & 0o777) | 0o400)
                os.utime(out.fileno(), (member.mtime, member.mtime))
            meta.mode |= stat.S_IFREG
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent.fd)
            meta.mode = stat.S_IFLNK | 0o777
        elif member.islnk():
            meta = self._hardlink(member, parent, base)
        elif member.isfifo():
            os.mkfifo(base, (perm & 0o777) | 0o600, dir_fd=parent.fd)
            meta.mode |= stat.S_IFIFO
        elif member.ischr() or member.isblk():
            # Recorded only: the disk builder creates it inside the image, never on the host.
            meta.mode |= stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            meta.rdev = (member.devmajor, member.devminor)
        else:
            return  # unknown member types (e.g. GNU volume headers) carry nothing for a root
        self.meta.set(path, meta)
        self._created.add(path)

    def _hardlink(self, member: tarfile.TarInfo, parent: _Dir, base: str) -> EntryMeta:
        target_parts = split_path(member.linkname, "hard link target")
        if not target_parts:
            raise ImageError(f"hard link {member.name!r} points at the root")
        target_dir = self._resolve_dir(target_parts[:-1], create=False)
        if target_dir is None:
            raise ImageError(f"hard link {member.name!r}: target {member.linkname!r} not in the image")
        try:
            name = target_parts[-1]
            st = _lstat(name, target_dir.fd)
            if st is None or stat.S_ISDIR(st.st_mode):
                raise ImageError(f"hard link {member.name!r}: target {member.linkname!r} is missing or a directory")
            os.link(name, base, src_dir_fd=target_dir.fd, dst_dir_fd=parent.fd, follow_symlinks=False)
            source = self.meta.get(target_dir.child(name))
        finally:
            self._close(target_dir)
        if source is None:
            return EntryMeta(member.uid, member.gid, stat.S_IFREG | (member.mode & 0o7777))
        return source

    def _whiteout(self, parent_parts: list[str], base: str, name: str) -> None:
        parent = self._resolve_dir(parent_parts, create=False)
        if parent is None:
            return
        try:
            if base == _OPAQUE:
                for child in os.listdir(parent.fd):
                    if parent.child(child) not in self._created:
                        self._remove(parent, child, _lstat(child, parent.fd))
                return
            target = base[len(_WHITEOUT):]
            if target in ("", ".", "..") or "/" in target:
                raise ImageError(f"layer whiteout {name!r} names no entry of its directory")
            st = _lstat(target, parent.fd)
            if st is not None:
                self._remove(parent, target, st)
            self.meta.remove_tree(parent.child(target))
        finally:
            self._close(parent)

    def _remove(self, parent: _Dir, name: str, st: os.stat_result | None) -> None:
        self._forget_dirs()
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=parent.fd)
            else:
                os.unlink(name, dir_fd=parent.fd)
        self.meta.remove_tree(parent.child(name))

    # -- in-root resolution -------------------------------------------------------------------------------
    def _parent(self, parts: list[str]) -> _Dir:
        """The directory ``parts`` names (created as needed), from the cache when resolved before; borrowed."""
        key = tuple(parts)
        found = self._dirs.get(key)
        if found is not None:
            self._dirs.move_to_end(key)
            return found
        opened = self._resolve_dir(parts, create=True)
        assert opened is not None
        self._dirs[key] = opened
        if len(self._dirs) > _DIR_CACHE:
            self._retired.append(self._dirs.popitem(last=False)[1])
        return opened

    def _forget_dirs(self) -> None:
        self._retired.extend(self._dirs.values())
        self._dirs.clear()

    def _close_retired(self) -> None:
        while self._retired:
            os.close(self._retired.pop().fd)

    def _resolve_dir(self, parts: list[str], *, create: bool) -> _Dir | None:
        """Open the directory ``parts`` names, resolving symlinks in root; create missing ones when asked.
        Returns None (create=False) when it does not exist."""
        stack: list[int] = [os.dup(self._root_fd)]
        names: list[str] = []
        todo = list(parts)
        links = 0
        try:
            while todo:
                part = todo.pop(0)
                if part in ("", "."):
                    continue
                if part == "..":
                    if names:
                        names.pop()
                        os.close(stack.pop())
                    continue
                st = _lstat(part, stack[-1])
                if st is None:
                    if not create:
                        _close_all(stack)
                        return None
                    os.mkdir(part, 0o755, dir_fd=stack[-1])
                    path = "/" + "/".join([*names, part])
                    self.meta.set(path, EntryMeta(0, 0, stat.S_IFDIR | 0o755))
                    self._created.add(path)
                elif stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise ImageError(f"too many symlinks resolving {'/'.join(parts)!r}")
                    target = os.readlink(part, dir_fd=stack[-1])
                    if target.startswith("/"):
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                        names.clear()
                    todo[:0] = target.split("/")
                    continue
                elif not stat.S_ISDIR(st.st_mode):
                    if not create:
                        _close_all(stack)
                        return None
                    raise ImageError(f"layer path {'/'.join(parts)!r}: {part!r} is not a directory")
                stack.append(os.open(part, _DIR_FLAGS, dir_fd=stack[-1]))
                names.append(part)
            fd = stack.pop()
            _close_all(stack)
            return _Dir(fd, names)
        except BaseException:
            _close_all(stack)
            raise

    @staticmethod
    def _close(d: _Dir | None) -> None:
        if d is not None:
            os.close(d.fd)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
