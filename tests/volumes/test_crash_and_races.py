"""Several processes racing on one name, and processes killed mid-create: the store and the disk stay consistent."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_microsandbox import sync
from pytest_microsandbox.errors import VolumeAlreadyExistsError, VolumeNotFoundError
from pytest_microsandbox.store import Store


def assert_consistent(home: Path) -> None:
    """Every recorded volume is whole, every directory is recorded, and no transitional leftovers remain."""
    names = {h.name for h in sync.Volume.list(home=home)}  # list() reaps first
    volumes_dir = home / "volumes"
    on_disk = set(os.listdir(volumes_dir)) if volumes_dir.exists() else set()
    assert on_disk == names, f"directories {on_disk} vs records {names}"
    assert Store(home).transitional_volume_names() == set()
    for name in names:
        handle = sync.Volume.get(name, home=home)
        if handle.kind == "disk":
            assert handle.disk_image is not None and handle.disk_image.stat().st_size == (handle.size_mib or 0) << 20


def race(count: int, action: Callable[[], str]) -> list[str]:
    """Run ``action`` in ``count`` forked processes released at one instant; their outcomes (or the repr of what
    they raised), sorted."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(count), ctx.Queue()

    def racer() -> None:
        barrier.wait()
        try:
            results.put(action())
        except Exception as err:  # report every failure kind, not only the expected ones
            results.put(repr(err))

    procs = [ctx.Process(target=racer) for _ in range(count)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return sorted(results.get(timeout=5) for _ in procs)


def _create_or_exists(home: Path) -> str:
    try:
        sync.Volume.create("contested", home=home)
        return "won"
    except VolumeAlreadyExistsError:
        return "exists"


def test_exactly_one_of_racing_creators_wins(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert race(6, lambda: _create_or_exists(home)) == ["exists"] * 5 + ["won"]
    assert_consistent(home)


def _churn(home: str, seed: int) -> None:
    for i in range(25):
        try:
            if (i + seed) % 2:
                sync.Volume.create("churn", home=home, kind="dir" if i % 3 else "disk",
                                   size_mib=None if i % 3 else 8)
            else:
                sync.Volume.remove("churn", home=home)
        except (VolumeAlreadyExistsError, VolumeNotFoundError):
            pass


def _reap_repeatedly(home: str) -> None:
    for _ in range(60):
        sync.Volume.list(home=home)  # every call reaps, racing the creators and removers


def test_racing_create_and_remove_stay_consistent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_churn, args=(str(home), seed)) for seed in range(6)]
    procs += [ctx.Process(target=_reap_repeatedly, args=(str(home),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert_consistent(home)


# A child that creates a volume and SIGKILLs itself at one chosen point of the sequence.
CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from pytest_microsandbox.volumes import _manager
    from pytest_microsandbox.store import Store
    from pytest_microsandbox import sync

    point = sys.argv[2]
    def die(*_a, **_k):
        os.kill(os.getpid(), signal.SIGKILL)

    def after(fn):
        def wrapper(*a, **k):
            fn(*a, **k)
            die()
        return wrapper

    if point == "after-claim":
        Store.begin_volume_create = after(Store.begin_volume_create)
    elif point == "during-mke2fs":
        _manager._make_ext4 = die
    elif point == "after-rename":
        _manager.os.rename = after(os.rename)
    elif point == "before-finish":
        Store.finish_volume_create = die
    elif point == "remove-after-mark":
        sync.Volume.create("victim", home=sys.argv[1], kind="disk", size_mib=8)
        Store.begin_volume_remove = after(Store.begin_volume_remove)
        sync.Volume.remove("victim", home=sys.argv[1])
    elif point == "remove-after-rename":
        sync.Volume.create("victim", home=sys.argv[1], kind="disk", size_mib=8)
        _manager.os.rename = after(os.rename)
        sync.Volume.remove("victim", home=sys.argv[1])
    sync.Volume.create("victim", home=sys.argv[1], kind="disk", size_mib=8)
    """
)


@pytest.mark.parametrize(
    "point", ["after-claim", "during-mke2fs", "after-rename", "before-finish", "remove-after-mark",
              "remove-after-rename"]
)
def test_process_killed_mid_operation_leaves_nothing_or_a_whole_volume(tmp_path: Path, point: str) -> None:
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-c", CRASHER, str(home), point], cwd=Path(__file__).parents[2],
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_consistent(home)
    # Interrupted creations are rolled back and interrupted removals finished: the name is free again.
    assert [h.name for h in sync.Volume.list(home=home)] == []
    sync.Volume.create("victim", home=home)


def test_random_kills_during_create(tmp_path: Path) -> None:
    """SIGKILL at arbitrary moments of a real create (no injection): always consistent afterwards."""
    home = tmp_path / "home"
    code = "import sys; from pytest_microsandbox import sync; " \
           "sync.Volume.create('v', home=sys.argv[1], kind='disk', size_mib=64)"
    for delay_ms in range(0, 400, 25):
        proc = subprocess.Popen([sys.executable, "-c", code, str(home)], cwd=Path(__file__).parents[2])
        try:
            proc.wait(delay_ms / 1000)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert_consistent(home)
        for handle in sync.Volume.list(home=home):
            handle.remove()


def test_racing_ensure_exists_all_get_the_volume(tmp_path: Path) -> None:
    """xdist workers ensuring one named volume: one creates it, the others wait for it, none fails."""
    home = tmp_path / "home"
    mount = sync.Volume.named("ensured", mode="ensure-exists", kind="disk", size_mib=64)
    assert race(5, lambda: sync.Volume.for_mount(mount, home=home).name) == ["ensured"] * 5
    assert_consistent(home)


def test_an_ensure_that_reads_between_the_creators_two_steps_gets_the_volume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1-in-8 race above, made certain: the creator finishes just after the ensurer read "not ready" and just
    before it read "not creating". The volume exists: the ensurer must return it, not call it vanished."""
    from pytest_microsandbox.store import ProcessIdentity, VolumeRecord, now_ms
    from pytest_microsandbox.volumes._volume import _manager

    home = tmp_path / "home"
    store = _manager(home).store  # the store object the ensurer reads through
    store.begin_volume_create(VolumeRecord(name="ensured", kind="dir", quota_mib=None, size_mib=None, labels={},
                                           created_at=now_ms()), ProcessIdentity.current())
    (home / "volumes" / "ensured").mkdir(parents=True)
    transitional = store.transitional_volume_names

    def creator_finishes_first() -> set[str]:
        store.finish_volume_create("ensured")
        return transitional()

    monkeypatch.setattr(store, "transitional_volume_names", creator_finishes_first)
    mount = sync.Volume.named("ensured", mode="ensure-exists")
    assert sync.Volume.for_mount(mount, home=home).name == "ensured"
    monkeypatch.undo()
    assert_consistent(home)


def test_a_removal_that_cannot_move_the_files_leaves_the_volume_whole(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_microsandbox.volumes import _manager

    home = tmp_path / "home"
    sync.Volume.create("stuck", home=home).fs.write("data.txt", b"kept")

    def refuse(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_manager.os, "rename", refuse)
    with pytest.raises(PermissionError):
        sync.Volume.remove("stuck", home=home)
    monkeypatch.undo()
    assert sync.Volume.get("stuck", home=home).fs.read("data.txt") == b"kept"  # still a whole, listed volume
    assert_consistent(home)
    sync.Volume.remove("stuck", home=home)
