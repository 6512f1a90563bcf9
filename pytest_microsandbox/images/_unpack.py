"""Apply image layers (plain, gzip or zstd tar) onto a root directory, safely.

Every path is resolved *in root*, as the image's own processes would see it: ``..`` stops at the root, absolute
symlinks restart at the root, and each step is an ``*at`` call on a directory fd with ``O_NOFOLLOW``, so no entry
(``../../etc/x``, ``/abs``, a symlink ``a -> /`` then ``a/etc/x``, a hard link to ``/etc/passwd``) can touch a file
outside. Names that climb above the root lexically are refused outright, as containerd does.

Whiteouts (``.wh.NAME``) and opaque directories (``.wh..wh..opq``) remove what lower layers put there. Ownership,
full modes, device numbers and xattrs go to a RootMeta, not onto host files: host copies get only permission bits
(at least owner-readable, directories owner-writable), never setuid/setgid, and no device node is ever created on
the host; with ``allow_devices`` they are recorded for the disk builder to create inside the image.

Layers are bounded (``ImageLimits``): decompressed bytes, entries, depth and one file's size are counted as they come,
tar headers that tarfile would read into memory whole are capped, and GNU sparse members (which no image builder
writes, and which tarfile expands with zeros: a few hundred bytes become gigabytes) are refused. No walk here recurses
and the descriptors held are bounded, whatever the depth.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pytest_microsandbox._tree import remove_tree
from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._digest import HashingReader
from pytest_microsandbox.images._limits import MAX_TAR_HEADER_BYTES, ImageLimits
from pytest_microsandbox.images._meta import EntryMeta, RootMeta

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_MAX_LINKS = 40
_DIR_CACHE = 64  # open directory fds kept between entries (tar members come grouped by directory)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)
_GNU_SPARSE = tarfile.GNUTYPE_SPARSE  # named here: inside TarInfo's methods, ``tarfile`` is the archive


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


def _sparse_refused(name: str) -> ImageError:
    return ImageError(f"layer entry {name!r} is a GNU sparse file: refused (no image builder writes them, and they "
                      "expand to any size)")


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header parsing with our refusals made before it reads anything into memory: oversized pax and
    long-name headers, and every GNU sparse format (their maps, too, would be read whole)."""

    def _proc_member(self, tarfile):  # type: ignore[no-untyped-def]
        if self.type in _HEADER_TYPES and self.size > MAX_TAR_HEADER_BYTES:
            raise ImageError(f"layer header of {self.size} bytes (more than {MAX_TAR_HEADER_BYTES})")
        if self.type == _GNU_SPARSE:
            raise _sparse_refused(self.name)
        return super()._proc_member(tarfile)

    def _proc_gnusparse_00(self, next, *args):  # type: ignore[no-untyped-def]  # tarfile's own parameter names
        raise _sparse_refused(next.name)

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


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

    def __init__(self, root: Path, meta: RootMeta, *, allow_devices: bool = False,
                 limits: ImageLimits | None = None) -> None:
        self.root = root
        self.meta = meta
        self.allow_devices = allow_devices
        self.limits = limits or ImageLimits()
        # Counted over every layer applied: the limits are per image.
        self.entries = 0
        self.stream_bytes = 0
        self.file_bytes = 0
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

        def count(size: int) -> None:
            self.stream_bytes += size
            self.limits.check("max_bytes", self.stream_bytes, f"{label}: decompressed layer data")

        try:
            content = HashingReader(open_layer(blob), on_bytes=count)
            with tarfile.open(fileobj=content, mode="r|", tarinfo=BoundedTarInfo) as tar:  # type: ignore[call-overload]
                while (member := tar.next()) is not None:
                    tar.members.clear()  # tarfile keeps every member it has read: a million entries, a GiB
                    self.entries += 1
                    self.limits.check("max_entries", self.entries, f"{label}: layer entries")
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
        self.limits.check("max_depth", len(parts), f"layer entry {member.name[:200]!r}: depth")
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
        self.limits.check("max_depth", len(parent.parts) + 1, f"layer entry {member.name[:200]!r}: depth")
        if member.isreg():
            what = f"layer file {member.name[:200]!r} ({member.size} bytes)"
            self.limits.check("max_file_bytes", member.size, what)
            self.file_bytes += member.size
            self.limits.check("max_bytes", self.file_bytes, what)
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
                remove_tree(name, dir_fd=parent.fd)
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
        # Members come in tree order, so the grandparent is usually cached: resolve only the last name from it
        # (a chain of directories thousands deep then costs one step per member, not one per level).
        base = self._dirs.get(key[:-1]) if key else None
        opened = self._resolve_dir(parts[-1:] if base is not None else parts, create=True, start=base)
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

    def _resolve_dir(self, parts: list[str], *, create: bool, start: _Dir | None = None) -> _Dir | None:
        """Open the directory ``parts`` names below ``start`` (default: the root), resolving symlinks in root; create
        missing ones when asked. Returns None (create=False) when it does not exist.

        One descriptor is held at a time: ``..`` re-opens the parent from the root by its names (real directories,
        no symlinks), so no depth can exhaust descriptors."""
        fd = os.dup(start.fd if start is not None else self._root_fd)
        names = list(start.parts) if start is not None else []
        todo = deque(parts)
        links = 0
        try:
            while todo:
                part = todo.popleft()
                if part in ("", "."):
                    continue
                if part == "..":
                    if names:
                        names.pop()
                        fd = self._replace_fd(fd, self._open_names(names))
                    continue
                st = _lstat(part, fd)
                if st is None:
                    if not create:
                        os.close(fd)
                        return None
                    self.limits.check("max_depth", len(names) + 1, f"layer path {'/'.join(parts)[:200]!r}: depth")
                    os.mkdir(part, 0o755, dir_fd=fd)
                    path = "/" + "/".join([*names, part])
                    self.meta.set(path, EntryMeta(0, 0, stat.S_IFDIR | 0o755))
                    self._created.add(path)
                elif stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise ImageError(f"too many symlinks resolving {'/'.join(parts)[:200]!r}")
                    target = os.readlink(part, dir_fd=fd)
                    if target.startswith("/"):
                        fd = self._replace_fd(fd, os.dup(self._root_fd))
                        names.clear()
                    todo.extendleft(reversed(target.split("/")))
                    continue
                elif not stat.S_ISDIR(st.st_mode):
                    if not create:
                        os.close(fd)
                        return None
                    raise ImageError(f"layer path {'/'.join(parts)[:200]!r}: {part!r} is not a directory")
                fd = self._replace_fd(fd, os.open(part, _DIR_FLAGS, dir_fd=fd))
                names.append(part)
            return _Dir(fd, names)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _replace_fd(old: int, new: int) -> int:
        os.close(old)
        return new

    def _open_names(self, names: list[str]) -> int:
        fd = os.dup(self._root_fd)
        try:
            for name in names:
                fd = self._replace_fd(fd, os.open(name, _DIR_FLAGS, dir_fd=fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _close(d: _Dir | None) -> None:
        if d is not None:
            os.close(d.fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
