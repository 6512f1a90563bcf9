"""Snapshot templates cached on disk, one per machine configuration, built once even by concurrent processes.

    cache = TemplateCache(home / "snapshots")
    path = cache.get_or_build(key, build)     # build(tmp_dir) boots a machine and snapshots it into tmp_dir

``key`` is any JSON-able description of what the template is valid for (``config_key``: kernel, initramfs,
memory, vCPUs, device layout, plus the caller's image digest and ready point). Its sha256 names the template's
directory. Builders take a ``filelock`` per key, so concurrent processes that need the same template build it once
and the others wait; a template is built in a temporary sibling and renamed into place, so readers never see half
of one. A template that turns out corrupted or mismatched (``SnapshotError`` when restoring it) is dropped with
``invalidate()`` and built again, never booted. ``entries()``, ``remove()`` and ``prune()`` list and clean the
cache by hand.

The cache stays bounded: every lookup that finds a template stamps its ``last-used`` file, and with ``keep=N`` a
build is followed by ``evict(N)``, which removes the least recently used templates beyond N. Clones running from
a removed template keep their mapping of its memory. A process restoring a template holds it ``pinned()`` (a
shared ``flock`` on its pin file) from before its lookup until its memory is mapped, and eviction skips pinned
templates, so none disappears between a lookup and its restore; one whose lock another process holds (being built
or dropped) is skipped too. Lock and pin files are never deleted: a process waiting on one that was unlinked would
hold a lock nobody else sees.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from _vmcore.errors import SnapshotError
from _vmcore.snapshot import MANIFEST, bytes_sha256, file_sha256, read_snapshot

if TYPE_CHECKING:
    from _vmcore.machine import MachineConfig

KEY_FILE = "key.json"
LAST_USED = "last-used"  # its mtime: when a lookup last found the template (the eviction order)
PIN_SUFFIX = ".pin"  # <digest>.pin: shared flocks of processes about to map the template
_TEMPLATE_NAME = re.compile(r"[0-9a-f]{32}")  # key_digest(); a builder's "<digest>.tmp-PID" is not one yet


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def config_key(config: MachineConfig, image_digest: str = "", ready: str = "",
               digests: str | os.PathLike | None = None) -> dict:
    """The cache key of a ``MachineConfig``: kernel and initramfs digests, memory, vCPUs, the device layout (disk
    sizes and modes, console ports, the shares' and other devices' ``identity()``), the command line, the root
    image's digest and the ready point the template is snapshotted at. Disk paths are left out: a copy of the same
    image will do. ``digests``: where the kernel's digest is remembered across processes (see ``file_sha256``)."""
    initramfs = None if config.initramfs is None else bytes_sha256(config.initramfs)
    return {
        "kernel_sha256": file_sha256(config.kernel, digests), "initramfs_sha256": initramfs, "image": image_digest,
        "memory_mib": config.memory_mib, "vcpus": config.vcpus, "cmdline_extra": config.cmdline_extra,
        "disks": [{"size": None if d.path is None else os.path.getsize(d.path), "read_only": d.read_only,
                   "serial": d.serial}
                  for d in config.disks],
        "console_ports": list(config.console_ports),
        "shares": [share.identity() for share in config.shares],
        "extra_devices": [device.identity() for device in config.extra_devices],
        "ready": ready,
    }


@dataclass(frozen=True)
class Template:
    """A cached template as ``entries()`` lists it."""

    path: Path
    key: dict  # empty when key.json is unreadable
    disk_bytes: int  # blocks allocated (the memory file is sparse)
    created: float
    last_used: float

    @property
    def id(self) -> str:
        return self.path.name


def _allocated(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def _stamp(path: Path) -> None:
    try:  # utime, not touch: recreating the file in a template being removed would leave its directory behind
        os.utime(path)
    except OSError:
        pass  # a read-only cache still serves its templates; it just cannot order them for eviction


class TemplateCache:
    def __init__(self, root: str | os.PathLike, lock_timeout: float = 900.0, keep: int | None = None) -> None:
        """``keep``: after building a template, remove the least recently used ones beyond this many (None: all
        stay until ``prune()``)."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.keep = keep

    @property
    def digest_memo(self) -> Path:
        """Where file digests of the keys are remembered (``file_sha256``); not a template's name, so never listed
        nor evicted."""
        return self.root / "digests"

    def path_for(self, key: dict) -> Path:
        return self.root / key_digest(key)

    @contextlib.contextmanager
    def pinned(self, key: dict) -> Iterator[None]:
        """Keep the template for ``key`` from eviction while this block runs (lookup or build, then the restore that
        maps its memory); ``remove()`` still removes it, which a restore reports as a ``SnapshotError``."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path_for(key)) + PIN_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _unless_pinned(self, path: Path) -> Iterator[bool]:
        """Yields False when a process holds ``path`` pinned; otherwise True, holding the pin exclusively for the
        block, so a process that pins it meanwhile waits and then finds it gone (and builds it again)."""
        fd = os.open(str(path) + PIN_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def lookup(self, key: dict) -> Path | None:
        """The template for ``key`` if a complete one is cached (its manifest and state check out)."""
        path = self.path_for(key)
        if not (path / MANIFEST).exists():
            return None
        try:
            read_snapshot(path, verify_memory=False)
            if json.loads((path / KEY_FILE).read_text()) != json.loads(json.dumps(key)):
                return None
        except (SnapshotError, OSError, ValueError):
            return None
        _stamp(path / LAST_USED)
        return path

    def get_or_build(self, key: dict, build: Callable[[Path], None]) -> Path:
        """The cached template for ``key``, building it with ``build(directory)`` under the key's lock if absent
        (or broken). Raises SnapshotError if ``build`` leaves no valid snapshot or the lock is not had in time."""
        found = self.lookup(key)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        try:
            with FileLock(str(path) + ".lock", timeout=self.lock_timeout):
                found = self.lookup(key)  # another process may have built it while we waited
                if found is not None:
                    return found
                self._build(path, key, build)
        except Timeout:
            raise SnapshotError(f"timed out after {self.lock_timeout:.0f} s waiting for template {path}") from None
        if self.keep is not None:
            self.evict(self.keep)
        return path

    def _build(self, path: Path, key: dict, build: Callable[[Path], None]) -> None:
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(tmp)
            read_snapshot(tmp, verify_memory=False)  # its memory was hashed as it was written: not again
            (tmp / KEY_FILE).write_text(json.dumps(key, sort_keys=True, indent=1))
            (tmp / LAST_USED).touch()
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def fingerprint(path: Path) -> tuple[int, int] | None:
        """Which build of a template ``path`` holds (None once it is gone): see ``invalidate``."""
        try:
            st = (path / MANIFEST).stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def invalidate(self, key: dict, only_if: tuple[int, int] | None = None) -> None:
        """Drop the template for ``key`` (found corrupted or mismatched): the next ``get_or_build`` rebuilds it.
        With ``only_if`` (its ``fingerprint`` when it failed), one another process has rebuilt since stays."""
        path = self.path_for(key)
        with FileLock(str(path) + ".lock", timeout=self.lock_timeout):
            if only_if is None or self.fingerprint(path) == only_if:
                shutil.rmtree(path, ignore_errors=True)

    def entries(self) -> list[Template]:
        """Every complete template, oldest first (one removed by another process meanwhile is left out)."""
        found = []
        for path in self.root.iterdir() if self.root.is_dir() else ():
            if not _TEMPLATE_NAME.fullmatch(path.name):
                continue
            try:
                created = (path / MANIFEST).stat().st_mtime
                try:
                    key = json.loads((path / KEY_FILE).read_text())
                except ValueError:
                    key = {}
                found.append(Template(path, key, _allocated(path), created, _mtime(path / LAST_USED, created)))
            except OSError:
                continue
        return sorted(found, key=lambda t: t.created)

    def remove(self, template_id: str) -> None:
        """Drop one template (clones running from it keep their mapping of its memory: unlinking is safe)."""
        path = self.root / template_id
        if path.parent != self.root or not path.is_dir():
            raise SnapshotError(f"no template {template_id} in {self.root}")
        with FileLock(str(path) + ".lock", timeout=self.lock_timeout):
            shutil.rmtree(path, ignore_errors=True)

    def evict(self, keep: int) -> list[str]:
        """Remove the least recently used templates beyond the ``keep`` most recently used; returns their names.
        One that another process has pinned (about to restore it) or locked (building or dropping it) stays."""
        if keep < 0:
            raise ValueError(f"keep must not be negative, not {keep}")
        by_use = sorted(self.entries(), key=lambda t: (t.last_used, t.created), reverse=True)
        removed = []
        for t in by_use[keep:]:
            try:
                with FileLock(str(t.path) + ".lock", timeout=0), self._unless_pinned(t.path) as free:
                    if not free:
                        continue
                    shutil.rmtree(t.path, ignore_errors=True)
            except Timeout:
                continue
            removed.append(t.id)
        return removed

    def prune(self, keep: int = 0) -> list[str]:
        """Remove every template but the ``keep`` most recently used, and what crashed builders left
        (``*.tmp-PID`` of dead processes); returns the names removed. A build in progress is left alone."""
        removed = self.evict(keep)
        for path in self.root.glob("*.tmp-*") if self.root.is_dir() else ():
            pid = path.name.rsplit("-", 1)[1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed
