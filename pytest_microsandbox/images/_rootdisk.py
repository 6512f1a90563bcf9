"""Build the read-only root disk of an image: ``mke2fs -d`` from the unpacked root, then ``debugfs`` writes the
recorded ownership, modes, device nodes and xattrs into the filesystem (they never exist on host files).

No journal (the disk is mounted read-only), 4 KiB blocks, sparse file sized with headroom: unused space costs
nothing on the host.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

from pytest_microsandbox._tree import walk
from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._meta import RootMeta

_BLOCK = 4096
_PATH_MAX = 4096  # Linux: longer paths cannot be named in one call (lstat here, debugfs's commands)
_INODE_SIZE = 256


def _tool(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)
    if not found:
        raise ImageError(f"{name} not found: install e2fsprogs")
    return found


def _usage(root: Path) -> tuple[int, int]:
    """(bytes in whole blocks, inode count) of the tree under ``root`` (hard links counted once)."""
    blocks, inodes, seen = 0, 1, set()
    for entry in walk(root):  # iterative: layers may nest thousands of levels deep
        st = entry.stat
        inodes += 1
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        blocks += -(-st.st_size // _BLOCK) + (1 if stat.S_ISDIR(st.st_mode) else 0)
    return blocks * _BLOCK, inodes


def build_ext4(root: Path, dest: Path, meta: RootMeta | None = None, label: str = "msb-root") -> Path:
    """Make ``dest`` an ext4 image of ``root`` with ``meta`` applied; written to a temp sibling then renamed."""
    used, inodes = _usage(root)
    inodes = inodes + (len(meta.entries) if meta else 0) + 64
    size = max(16 << 20, int(used * 1.2) + inodes * _INODE_SIZE * 2 + (16 << 20))
    size = -(-size // (1 << 20)) << 20
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}-", dir=dest.parent)
    os.close(fd)
    try:
        os.truncate(tmp, size)
        _run([_tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", str(_BLOCK), "-I", str(_INODE_SIZE),
              "-N", str(inodes), "-m", "0", "-O", "^has_journal,^resize_inode", "-E", "root_owner=0:0",
              "-L", label, "-d", str(root), tmp], "mke2fs")
        if meta is not None:
            _apply_meta(root, Path(tmp), meta)
        os.chmod(tmp, 0o444)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def _quotable(path: str) -> bool:
    """Whether debugfs's command parser can take ``path`` inside double quotes."""
    return all(ch.isprintable() and ch not in '"\\' for ch in path)


class _Specs:
    """How debugfs names each path: ``"path"`` when quotable, else ``<inode>`` found by listing the parent."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk
        self._listings: dict[str, dict[bytes, int]] = {}

    def __call__(self, path: str) -> str | None:
        if _quotable(path):
            return f'"{path}"'
        parent, _, name = path.rpartition("/")
        parent = parent or "/"
        if not _quotable(parent) or "\n" in name:
            return None
        if parent not in self._listings:
            self._listings[parent] = self._list(parent)
        ino = self._listings[parent].get(os.fsencode(name))
        return f"<{ino}>" if ino else None

    def _list(self, parent: str) -> dict[bytes, int]:
        done = subprocess.run([_tool("debugfs"), "-R", f'ls -p "{parent}"', str(self.disk)], capture_output=True,
                              timeout=120)
        found: dict[bytes, int] = {}
        for line in done.stdout.split(b"\n"):  # "/ino/mode/uid/gid/name/size/": names never hold "/"
            fields = line.strip().strip(b"/").split(b"/")
            if len(fields) == 6 and fields[0].isdigit():
                found[fields[4]] = int(fields[0])
        return found


def _apply_meta(root: Path, disk: Path, meta: RootMeta) -> None:
    lines: list[str] = []
    skipped = 0
    spec_of = _Specs(disk)
    with tempfile.TemporaryDirectory(prefix="msb-debugfs-") as scratch:
        for path, entry in sorted(meta.entries.items()):
            if len(os.fsencode(f"{root}{path}")) >= _PATH_MAX:
                skipped += 1  # only a hostile layer nests this deep; its files keep the host's ownership
                continue
            host = _host_stat(root, path)
            if entry.rdev is not None:
                parent, _, name = path.rpartition("/")
                if host is not None:
                    continue  # a later layer put a real file there
                if not _quotable(path):
                    skipped += 1
                    continue
                kind = "c" if stat.S_ISCHR(entry.mode) else "b"
                lines += [f'cd "{parent or "/"}"', f'mknod "{name}" {kind} {entry.rdev[0]} {entry.rdev[1]}', "cd /"]
                host_uid, host_gid, host_mode = -1, -1, -1
            elif host is None:
                continue
            else:
                host_uid, host_gid, host_mode = host.st_uid, host.st_gid, host.st_mode
            changes = []
            if host_uid != entry.uid:  # debugfs's "uid" sets both 16-bit halves
                changes.append(f"uid {entry.uid}")
            if host_gid != entry.gid:
                changes.append(f"gid {entry.gid}")
            if host_mode != entry.mode and not stat.S_ISLNK(entry.mode):
                changes.append(f"mode 0{entry.mode:o}")
            if not changes and not entry.xattrs:
                continue
            spec = spec_of(path)
            if spec is None:
                skipped += 1
                continue
            lines += [f"sif {spec} {change}" for change in changes]
            for index, (name, value) in enumerate(entry.xattrs.items()):
                if not _quotable(name):
                    continue
                value_file = os.path.join(scratch, f"x{len(lines)}.{index}")
                Path(value_file).write_bytes(value)
                lines.append(f'ea_set -f "{value_file}" {spec} "{name}"')
        if skipped:
            warnings.warn(f"{skipped} entries with unrepresentable names keep default ownership in the disk",
                          stacklevel=3)
        if not lines:
            return
        script = os.path.join(scratch, "script")
        Path(script).write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
        out = _run([_tool("debugfs"), "-w", "-f", script, str(disk)], "debugfs")
    errors = [ln for ln in out.splitlines() if ln and not ln.startswith("debugfs") and "Allocated inode" not in ln]
    if errors:
        raise ImageError("debugfs could not apply image metadata: " + "; ".join(errors[:5]))


def _host_stat(root: Path, path: str) -> os.stat_result | None:
    try:
        return os.lstat(str(root) + path) if path != "/" else os.lstat(root)
    except FileNotFoundError:
        return None


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ImageError(f"{what} failed: {err}") from None
    if done.returncode != 0:
        raise ImageError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stderr


def build_erofs(root: Path, dest: Path) -> Path:
    """An EROFS image of ``root`` (host ownership, forced to root): for comparing build speed with ext4."""
    tool = shutil.which("mkfs.erofs")
    if not tool:
        raise ImageError("mkfs.erofs not found: install erofs-utils")
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}-", dir=dest.parent)
    os.close(fd)
    try:
        _run([tool, "--quiet", "--all-root", tmp, str(root)], "mkfs.erofs")
        os.chmod(tmp, 0o444)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest
