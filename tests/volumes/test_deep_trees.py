"""Trees deeper than Python's recursion limit (and than PATH_MAX), as a guest makes them (``mkdir a && cd a`` in a
loop): removing such a volume works, and one leftover that cannot be removed never breaks the store."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from pytest_microsandbox import sync
from pytest_microsandbox._tree import remove_tree
from pytest_microsandbox.store import ProcessIdentity, Store
from pytest_microsandbox.volumes import _manager

# Walks that open what they find (the old code) block forever on a FIFO: fail instead of hanging the run.
pytestmark = pytest.mark.timeout(120)


def nest(top: Path, levels: int, name: str = "a") -> None:
    """``levels`` directories, one inside the next, made the way a guest would: one ``mkdir`` from the last one."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.mkfifo("pipe", dir_fd=fd)  # never opened by a walk: it would block a reader forever
        with os.fdopen(os.open("file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as out:
            out.write(b"deep")
    finally:
        os.close(fd)


def leftovers(home: Path) -> list[str]:
    return sorted(n for n in os.listdir(home / "volumes") if n.startswith("."))


def test_volume_with_a_2000_level_tree_is_removed_and_the_store_keeps_working(home):
    deep = sync.Volume.create("deep", home=home)
    sync.Volume.create("other", home=home)
    deep.fs.mkdir("z/" * 2000)
    nest(deep.path / ("z/" * 10).rstrip("/"), 3000)  # 3,010 levels: the paths outgrow PATH_MAX too
    assert deep.handle.used_bytes > 0
    sync.Volume.remove("deep", home=home)
    assert [h.name for h in sync.Volume.list(home=home)] == ["other"]
    assert leftovers(home) == [] and Store(home).transitional_volume_names() == set()
    sync.Volume.create("deep", home=home)  # the name is free again
    assert sync.Volume.get("deep", home=home).fs.list() == []


def test_remove_dir_takes_a_deep_tree_with_a_fifo(home):
    volume = sync.Volume.create("v", home=home)
    volume.fs.write("keep.txt", b"k")
    volume.fs.mkdir("d")
    nest(volume.path / "d", 2500)
    volume.fs.remove_dir("d")
    assert [e.path for e in volume.fs.list()] == ["keep.txt"]


def test_a_removal_a_crash_left_behind_with_a_deep_tree_is_finished_by_the_next_call(home):
    """What the old code left after RecursionError: the row ``removing`` and a ``.removing-*`` tree; its owner
    is dead now. Every later call used to fail on it."""
    sync.Volume.create("other", home=home)
    sync.Volume.create("deep", home=home)
    store = Store(home)
    store.begin_volume_remove("deep", ProcessIdentity(os.getpid(), 0))  # start ticks 0: a process long gone
    doomed = home / "volumes" / ".removing-deep-0123456789ab"
    os.rename(home / "volumes" / "deep", doomed)
    nest(doomed, 5000)
    assert [h.name for h in sync.Volume.list(home=home)] == ["other"]
    assert leftovers(home) == [] and store.transitional_volume_names() == set()
    sync.Volume.create("deep", home=home)


def test_a_leftover_that_cannot_be_deleted_is_reported_and_never_breaks_the_store(home, monkeypatch):
    sync.Volume.create("other", home=home)
    stuck = sync.Volume.create("stuck", home=home)
    stuck.fs.write("f", b"x")

    def refuse(path: object, **_: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_manager, "remove_tree", refuse)
    with pytest.warns(RuntimeWarning, match=r"could not delete .*\.removing-stuck-.*retried"):
        sync.Volume.remove("stuck", home=home)
    with pytest.warns(RuntimeWarning, match="retried on the next volume operation"):
        assert [h.name for h in sync.Volume.list(home=home)] == ["other"]
    with pytest.warns(RuntimeWarning):
        sync.Volume.create("third", home=home)
        assert sync.Volume.get("other", home=home).name == "other"
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [h.name for h in sync.Volume.list(home=home)] == ["other", "third"]
    assert leftovers(home) == []


def test_a_staging_leftover_that_is_a_fifo_or_symlink_is_unlinked_not_opened(home, tmp_path):
    sync.Volume.create("v", home=home)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    os.mkfifo(home / "volumes" / ".creating-gone-0123456789ab")
    os.symlink(outside, home / "volumes" / ".removing-gone-0123456789ab")
    assert [h.name for h in sync.Volume.list(home=home)] == ["v"]
    assert leftovers(home) == []
    assert (outside / "precious").read_text() == "keep" and stat.S_ISDIR(outside.lstat().st_mode)


def _remove_a_locked_down_volume(home: Path) -> str:
    """A guest's ``chmod 555`` and ``chmod 000`` directories (its files are the host user's): removal still works."""
    warnings.simplefilter("error")
    volume = sync.Volume.create("locked", home=home)
    volume.fs.write("ro/unreadable/deep/f", b"x")
    volume.fs.write("ro/g", b"y")
    nest(volume.path / "ro/unreadable/deep", 1500)
    os.chmod(volume.path / "ro/unreadable", 0o000)
    os.chmod(volume.path / "ro", 0o555)
    os.chmod(volume.path, 0o500)
    sync.Volume.remove("locked", home=home)
    return ",".join(leftovers(home) + [h.name for h in sync.Volume.list(home=home)]) or "clean"


def test_directories_a_guest_made_read_only_or_unreadable_are_still_removed():
    """As an unprivileged host user: root ignores permissions, so a root test run drops to uid 65534 in a child."""
    base = Path(tempfile.mkdtemp(prefix="msb-locked-"))
    try:
        if os.geteuid() != 0:
            assert _remove_a_locked_down_volume(base / "home") == "clean"
            return
        os.chown(base, 65534, 65534)
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()

        def child() -> None:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                results.put(_remove_a_locked_down_volume(base / "home"))
            except BaseException as err:  # report it to the parent, whatever it is
                results.put(repr(err))

        proc = ctx.Process(target=child)
        proc.start()
        proc.join(60)
        assert results.get(timeout=5) == "clean"
    finally:
        remove_tree(base)


def test_an_abandoned_removal_that_cannot_be_finished_never_breaks_listing(home):
    """A dead process's removal whose directory cannot be moved aside (here: something is mounted on it): a list
    warns and lists the others, and once that is cleared a later call finishes the removal."""
    sync.Volume.create("other", home=home)
    sync.Volume.create("pinned", home=home)
    pinned = home / "volumes" / "pinned"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "msb-test", str(pinned)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        Store(home).begin_volume_remove("pinned", ProcessIdentity(os.getpid(), 0))  # its remover died
        lister = subprocess.run(  # another process takes the removal over, fails to finish it, and exits
            [sys.executable, "-W", "always", "-c", "from pytest_microsandbox import sync; import sys; "
             "print([h.name for h in sync.Volume.list(home=sys.argv[1])])", str(home)],
            capture_output=True, text=True, check=True)
        assert lister.stdout.strip() == "['other']"
        assert "could not finish deleting volume pinned" in lister.stderr
    finally:
        subprocess.run(["umount", "-l", str(pinned)], check=True)
    assert [h.name for h in sync.Volume.list(home=home)] == ["other"]
    assert not pinned.exists() and Store(home).transitional_volume_names() == set()
