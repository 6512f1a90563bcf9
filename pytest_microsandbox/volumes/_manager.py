"""The one implementation of volume management (sync); the async API runs it in a worker thread.

Layout: ``<home>/volumes/<name>/`` (a ``disk`` volume holds ``disk.raw``, an ext4 image made by ``mke2fs``). A volume
is built in a ``.creating-*`` sibling and renamed into place; removal renames it to ``.removing-*`` before deleting.
The store records each transition with its owner process, so whatever a crash interrupts is rolled back (create) or
finished (remove) by the next call: a volume is either whole or absent.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from pytest_microsandbox._validate import validate_mib, validate_volume_name
from pytest_microsandbox.errors import InvalidConfigError, VolumeError, VolumeInUseError
from pytest_microsandbox.mounts import VolumeKind
from pytest_microsandbox.store import ProcessIdentity, Store, VolumeRecord, now_ms

DISK_IMAGE = "disk.raw"
_CREATING = ".creating-"
_REMOVING = ".removing-"


def _validate_labels(labels: object) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidConfigError(f"labels must be a dict of str to str, not {labels!r}")
    if any(not k for k in labels):
        raise InvalidConfigError("label keys must not be empty")
    return dict(labels)


class VolumeManager:
    """Create, find, list and remove the named volumes under one home."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.store = Store(self.home)
        self.root = self.home / "volumes"

    def path_of(self, name: str) -> Path:
        return self.root / name

    # -- public operations ----------------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        kind: VolumeKind | str = VolumeKind.DIRECTORY,
        size_mib: int | None = None,
        quota_mib: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> VolumeRecord:
        record = self._validated(name, kind, size_mib, quota_mib, labels)
        self.reap()
        self.root.mkdir(parents=True, exist_ok=True)
        me = ProcessIdentity.current()
        self.store.begin_volume_create(record, me)
        staging = self.root / f"{_CREATING}{name}-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir(mode=0o755)
            if record.kind == VolumeKind.DISK:
                _make_ext4(staging / DISK_IMAGE, record.size_mib or 0)
            if os.path.lexists(self.path_of(name)):
                raise VolumeError(f"{self.path_of(name)} exists but no volume {name} is recorded; move it away")
            os.rename(staging, self.path_of(name))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            self.store.delete_volume_row(name, me)
            raise
        self.store.finish_volume_create(name)
        return record

    def get(self, name: str) -> VolumeRecord | None:
        validate_volume_name(name)
        self.reap()
        return self.store.get_volume(name)

    def list(self) -> list[VolumeRecord]:
        self.reap()
        return self.store.list_volumes()

    def remove(self, name: str) -> None:
        """Remove a volume and its files; refuses (VolumeInUseError) while a live sandbox mounts it."""
        validate_volume_name(name)
        self.reap()
        if _disk_image_locked(self.path_of(name) / DISK_IMAGE):
            raise VolumeInUseError(name, "(a process holding a lock on its disk image)")
        me = ProcessIdentity.current()
        self.store.begin_volume_remove(name, me)
        try:
            self._discard(name, me)
        except OSError:
            self.store.revert_volume_remove(name, me)  # its files could not be moved aside: it stays a volume
            raise

    # -- crash recovery ---------------------------------------------------------------------------------------------

    def reap(self) -> None:
        """Roll back creations and finish removals whose process died, and delete their leftover directories."""
        me = None
        for record in self.store.abandoned_volume_transitions():
            me = me or ProcessIdentity.current()
            if self.store.claim_abandoned(record, me):
                self._discard(record.name, me)
        if not self.root.is_dir():
            return
        # List first, then read the busy names: a creator records its claim before it makes its staging
        # directory, so every staging directory listed here that is still in use has its name in ``busy``.
        entries = list(os.scandir(self.root))
        busy = self.store.transitional_volume_names()
        for entry in entries:
            if entry.name.startswith(_REMOVING):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.name.startswith(_CREATING):
                volume = entry.name[len(_CREATING) :].rsplit("-", 1)[0]
                if volume not in busy:
                    shutil.rmtree(entry.path, ignore_errors=True)

    def _discard(self, name: str, owner: ProcessIdentity) -> None:
        """Delete a volume's files (via a ``.removing-*`` rename, so a crash never leaves half a volume) and row."""
        target = self.path_of(name)
        doomed = self.root / f"{_REMOVING}{name}-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(target, doomed)
        except FileNotFoundError:
            pass
        else:
            shutil.rmtree(doomed, ignore_errors=True)
        self.store.delete_volume_row(name, owner)

    # -- helpers ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _validated(
        name: str, kind: VolumeKind | str, size_mib: int | None, quota_mib: int | None, labels: object
    ) -> VolumeRecord:
        validate_volume_name(name)
        try:
            kind = VolumeKind(kind)
        except ValueError:
            raise InvalidConfigError(f"unknown volume kind {kind!r} (expected 'dir' or 'disk')") from None
        validate_mib(size_mib, "size_mib")
        validate_mib(quota_mib, "quota_mib")
        if kind == VolumeKind.DISK:
            if size_mib is None:
                raise InvalidConfigError("a disk volume needs size_mib")
            if quota_mib is not None:
                raise InvalidConfigError("quota_mib applies to directory volumes; a disk volume's limit is size_mib")
        elif size_mib is not None:
            raise InvalidConfigError("size_mib applies to disk volumes; limit a directory volume with quota_mib")
        return VolumeRecord(
            name=name,
            kind=str(kind),
            quota_mib=quota_mib,
            size_mib=size_mib,
            labels=_validate_labels(labels),
            created_at=now_ms(),
        )


def _make_ext4(image: Path, size_mib: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    mke2fs = shutil.which("mke2fs") or shutil.which("mkfs.ext4") or "/sbin/mke2fs"
    try:
        subprocess.run(
            [mke2fs, "-q", "-F", "-t", "ext4", "-E", f"root_owner={os.getuid()}:{os.getgid()}", str(image)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "MKE2FS_SYNC": "0"},
        )
    except FileNotFoundError:
        raise VolumeError("disk volumes need e2fsprogs' mke2fs (apt-get install e2fsprogs)") from None
    except subprocess.CalledProcessError as err:
        raise VolumeError(f"mke2fs failed for {image.name}: {err.stderr.strip()}") from None


def _disk_image_locked(image: Path) -> bool:
    """Whether a VMM holds ``flock`` on a disk volume's image (it does for as long as it runs: a crash releases it)."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our probe lock
    return False


def used_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (like ``du``), never following symlinks."""
    total = 0
    stack = [os.fspath(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total
