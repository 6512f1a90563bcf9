"""The one implementation of volume management (sync); the async API runs it in a worker thread.

Layout: ``<home>/volumes/<name>/`` (a ``disk`` volume holds ``disk.raw``, an ext4 image made by ``mke2fs``). A volume
is built in a ``.creating-*`` sibling and renamed into place; removal renames it to ``.removing-*`` before deleting.
The store records each transition with its owner process, so whatever a crash interrupts is rolled back (create) or
finished (remove) by the next call: a volume is either whole or absent.

A volume's files are shaped by untrusted guests (trees thousands deep, FIFOs, names that are not UTF-8), so they are
deleted by an iterative, descriptor-based walk (``_tree``), and files that still cannot be deleted are reported with a
warning and left for the next call: one bad leftover never makes listing, finding or creating other volumes fail.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import warnings
from pathlib import Path

from pytest_microsandbox._tree import remove_tree, walk
from pytest_microsandbox.errors import InvalidConfigError, VolumeError, VolumeInUseError
from pytest_microsandbox.mounts import VolumeKind
from pytest_microsandbox.store import AbandonedTransitions, ProcessIdentity, Store, VolumeRecord, now_ms
from pytest_microsandbox.validation import validate_mib, validate_volume_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _T = TypeVar("_T")

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
        me = ProcessIdentity.current()
        self._delete_leftovers()
        self._claim(lambda: self.store.begin_volume_create(record, me, check_abandoned=True))
        target = self.path_of(name)
        staging = self.root / f"{_CREATING}{name}-{os.urandom(6).hex()}"
        try:
            try:
                os.mkdir(staging, 0o755)
            except FileNotFoundError:  # the home's first volume
                self.root.mkdir(parents=True, exist_ok=True)
                os.mkdir(staging, 0o755)
            if record.kind == VolumeKind.DISK:
                _make_ext4(staging / DISK_IMAGE, record.size_mib or 0)
            if os.path.lexists(target):
                raise VolumeError(f"{target} exists but no volume {name} is recorded; move it away")
            os.rename(staging, target)
        except BaseException:
            _delete_leftover(staging)
            self.store.delete_volume_row(name, me)
            raise
        self.store.finish_volume_create(name)
        return record

    def get(self, name: str) -> VolumeRecord | None:
        validate_volume_name(name)
        found, abandoned = self.store.volumes_and_abandoned(name)
        if self._reap(abandoned):  # it rolled back or finished a transition: read what that left
            return self.store.get_volume(name)
        return found[0] if found else None

    def list(self) -> list[VolumeRecord]:
        volumes, abandoned = self.store.volumes_and_abandoned()
        if self._reap(abandoned):
            return self.store.list_volumes()
        return volumes

    def remove(self, name: str) -> None:
        """Remove a volume and its files; refuses (VolumeInUseError) while a live sandbox mounts it."""
        validate_volume_name(name)
        self._delete_leftovers()
        if _disk_image_locked(self.path_of(name) / DISK_IMAGE):
            raise VolumeInUseError(name, "(a process holding a lock on its disk image)")
        me = ProcessIdentity.current()
        self._claim(lambda: self.store.begin_volume_remove(name, me, check_abandoned=True))
        try:
            self._discard(name, me)
        except OSError:
            self.store.revert_volume_remove(name, me)  # its files could not be moved aside: it stays a volume
            raise

    # -- crash recovery ---------------------------------------------------------------------------------------------

    def reap(self) -> None:
        """Roll back creations and finish removals whose process died, and delete their leftover directories."""
        self._reap(self.store.abandoned_volume_transitions())

    def _reap(self, abandoned: list[VolumeRecord]) -> bool:
        """``reap``, given the abandoned transitions just read (get and list read them with their answer, in one
        go); True if it took any of them over, so the caller reads again."""
        me = None
        took_over = False
        for record in abandoned:
            me = me or ProcessIdentity.current()
            if self.store.claim_abandoned(record, me):
                try:
                    self._discard(record.name, me)
                except (OSError, VolumeError) as err:  # one poisoned volume never fails get/list/create of others
                    warnings.warn(f"could not finish deleting volume {record.name} ({err}); it is retried once this "
                                  "process has exited, by the next volume operation", RuntimeWarning, stacklevel=3)
                took_over = True
        self._delete_leftovers()
        return took_over

    def _claim(self, begin: Callable[[], _T]) -> _T:
        """Run a ``check_abandoned`` claim (create, remove), reaping first whatever it reports abandoned: a reap
        before every claim, without a read of its own."""
        while True:
            try:
                return begin()
            except AbandonedTransitions as found:
                self._reap(found.records)

    def _delete_leftovers(self) -> None:
        """Delete the staging and removed directories no live process is working on (a crash, or a deletion that
        failed, leaves them)."""
        # List first, then read the busy names: a creator records its claim before it makes its staging
        # directory, so every staging directory listed here that is still in use has its name in ``busy``.
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return
        # Volume names start with a letter or digit: only the (rare) leftovers start with a dot.
        leftovers = [n for n in names if n[0] == "." and n.startswith((_CREATING, _REMOVING))]
        if not leftovers:
            return
        busy = self.store.transitional_volume_names()
        for name in leftovers:
            if name.startswith(_REMOVING):
                _delete_leftover(self.root / name)
            elif name[len(_CREATING) :].rsplit("-", 1)[0] not in busy:
                _delete_leftover(self.root / name)

    def _discard(self, name: str, owner: ProcessIdentity) -> None:
        """Delete a volume's files (via a ``.removing-*`` rename, so a crash never leaves half a volume) and row.

        Once renamed the volume is gone, whether or not every file could be deleted: its row goes too, and whatever
        is left under ``.removing-*`` is retried by each later ``reap``.
        """
        target = self.path_of(name)
        doomed = self.root / f"{_REMOVING}{name}-{os.urandom(6).hex()}"
        try:
            os.rename(target, doomed)
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            # An overlayfs without redirect_dir cannot rename a directory of its lower layer (a home baked into an
            # image, a container's): delete in place. The row stays 'removing' until the files are gone, so neither
            # a crash nor a file that cannot be deleted leaves a half volume on view: a later reap finishes it.
            try:
                remove_tree(target)
            except OSError as partial:
                raise VolumeError(f"volume {name} is partly deleted ({partial}); the rest is deleted once this "
                                  "process has exited, by the next volume operation") from partial
        else:
            _delete_leftover(doomed)
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
    import subprocess  # only disk volumes need it: not imported by every ``msb volume`` call

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


def _delete_leftover(path: Path) -> None:
    """Delete a staging or removed volume's files; what cannot be deleted is reported and retried later, never raised
    (it is no volume any more, and other volumes' operations must not fail on it)."""
    try:
        remove_tree(path)
    except OSError as err:
        warnings.warn(f"could not delete {path} ({err}); it is retried on the next volume operation",
                      RuntimeWarning, stacklevel=3)


def used_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (like ``du``), never following symlinks.

    A tree that cannot be read whole (a directory a guest made unreadable, one moved mid-walk) reports what could be
    counted: ``msb volume ls`` must not fail on one volume."""
    total = 0
    try:
        for entry in walk(path):
            total += entry.stat.st_blocks * 512
    except OSError:
        pass
    return total
