"""Fixtures for the FUSE server tests: a share laid out next to sentinels, mounted through /dev/fuse (always
unmounted at teardown, with a watchdog that cuts the connection so no test can hang on a stuck server)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fs_layout import Layout

from _vmcore.fs import FuseMount, FuseUnavailableError

WATCHDOG_S = 120.0


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    share, outside, decoy = tmp_path / "share", tmp_path / "outside", tmp_path / "m" / "outside"
    mountpoint = tmp_path / "m" / "mnt"
    for d in (share, outside, decoy, mountpoint):
        d.mkdir(parents=True)
    sentinel = outside / "sentinel"
    sentinel.write_bytes(b"do not touch\n")
    return Layout(share, outside, sentinel, mountpoint, decoy)


@pytest.fixture
def mount_share(layout: Layout) -> Iterator[Callable[..., FuseMount]]:
    """Mounts ``layout.share`` at ``layout.mountpoint`` with the given server options; unmounts at teardown."""
    mounts: list[FuseMount] = []
    timers: list[threading.Timer] = []

    def start(**options: object) -> FuseMount:
        fm = FuseMount(layout.share, layout.mountpoint, **options)
        try:
            fm.start()
        except FuseUnavailableError as err:
            pytest.skip(f"FUSE mounts unavailable here: {err}")
        mounts.append(fm)
        timer = threading.Timer(WATCHDOG_S, fm.abort)
        timer.daemon = True
        timer.start()
        timers.append(timer)
        return fm

    yield start
    for timer in timers:
        timer.cancel()
    for fm in mounts:
        fm.close()
        assert fm.error is None, f"serving thread failed: {fm.error!r}"
    assert not os.path.ismount(layout.mountpoint)


@pytest.fixture(params=["plain", "fuse"])
def where(request: pytest.FixtureRequest, layout: Layout, mount_share: Callable[..., FuseMount]) -> Path:
    """The same file-operation test, on a plain directory and through our server mounted with /dev/fuse."""
    if request.param == "plain":
        return layout.share
    mount_share()
    return layout.mountpoint
