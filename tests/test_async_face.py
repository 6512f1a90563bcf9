"""The async faces are built from the sync classes: same names, signatures and docstrings, every call awaited in a
worker thread (``_async_face``)."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

from pytest_microsandbox._async_face import AsyncFace, awaited, awaited_constructor, awaited_static, delegated
from pytest_microsandbox.agent import client
from pytest_microsandbox.sandbox import _aio as sandbox_aio
from pytest_microsandbox.sandbox import _sandbox as sandbox_sync
from pytest_microsandbox.volumes import _aio as volumes_aio
from pytest_microsandbox.volumes import _fs, _volume


class Counter:
    """A sync class with a bit of everything."""

    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.threads: list[str] = []

    @classmethod
    def make(cls, start: int, *, step: int = 1) -> Counter:
        """Make one."""
        return cls(start * step)

    @staticmethod
    def total(*counters: Counter) -> int:
        """Add them up."""
        return sum(c.value for c in counters)

    @property
    def current(self) -> int:
        """Read it (the thread that read it is kept)."""
        self.threads.append(threading.current_thread().name)
        return self.value

    def add(self, n: int, *, twice: bool = False) -> int:
        """Add ``n`` (or twice ``n``)."""
        self.threads.append(threading.current_thread().name)
        self.value += n * (2 if twice else 1)
        return self.value

    def label(self, prefix: str = "#") -> str:
        """Show it."""
        return f"{prefix}{self.value}"


class AsyncCounter(AsyncFace):
    make = awaited_constructor(Counter.make)
    total = awaited_static(Counter.total)
    doubled = awaited_static(Counter.make, returns=lambda c: c.value * 2)
    current = awaited(Counter.current)
    add = awaited(Counter.add)
    value_now = delegated(Counter.current)
    label = delegated(Counter.label)


def test_members_keep_the_sync_names_signatures_and_docstrings() -> None:
    assert inspect.signature(AsyncCounter.add) == inspect.signature(Counter.add)
    assert inspect.signature(AsyncCounter.make) == inspect.signature(Counter.make)
    assert inspect.signature(AsyncCounter.total) == inspect.signature(Counter.total)
    assert inspect.signature(AsyncCounter.label) == inspect.signature(Counter.label)
    assert AsyncCounter.add.__doc__ == Counter.add.__doc__ and AsyncCounter.value_now.__doc__ == Counter.current.__doc__
    assert AsyncCounter.add.__qualname__ == "AsyncCounter.add" and AsyncCounter.add.__module__ == __name__
    for name in ("make", "total", "current", "add"):
        assert inspect.iscoroutinefunction(getattr(AsyncCounter, name)), name
    assert not inspect.iscoroutinefunction(AsyncCounter.label)


def test_awaited_calls_run_off_the_event_loop_and_wrap_what_they_return() -> None:
    async def scenario() -> None:
        counter = await AsyncCounter.make(2, step=3)
        assert isinstance(counter, AsyncCounter) and counter._sync.value == 6
        assert await counter.add(1, twice=True) == 8 and await counter.current() == 8
        assert counter.value_now == 8 and counter.label(prefix="n=") == "n=8"
        assert await AsyncCounter.total(counter._sync, Counter(4)) == 12
        assert await AsyncCounter.doubled(5) == 10
        loop_thread = threading.current_thread().name
        assert len(counter._sync.threads) == 3 and loop_thread not in counter._sync.threads[:2]
        assert repr(counter) == repr(counter._sync)

    asyncio.run(scenario())


def test_errors_reach_the_awaiting_caller() -> None:
    async def scenario() -> None:
        with pytest.raises(TypeError):
            await AsyncCounter(Counter()).add("x")

    asyncio.run(scenario())


@pytest.mark.parametrize("face,sync", [
    (volumes_aio.VolumeFs, _fs.VolumeFs),
    (volumes_aio.VolumeHandle, _volume.VolumeHandle),
    (volumes_aio.Volume, _volume.Volume),
    (sandbox_aio.Sandbox, sandbox_sync.Sandbox),
    (sandbox_aio.GuestFs, client.GuestFs),
])
def test_the_package_faces_follow_their_sync_classes(face: type, sync: type) -> None:
    """Each member a face takes from its sync class has the sync signature (a change there shows up here)."""
    for name, member in vars(face).items():
        function = getattr(member, "__func__", None) or getattr(member, "fget", None) or member
        if not getattr(function, "__async_face_member__", False):
            continue
        theirs = inspect.getattr_static(sync, name)
        if isinstance(member, staticmethod | classmethod):  # compared as called: on the class
            ours, expected = inspect.signature(getattr(face, name)), inspect.signature(getattr(sync, name))
            theirs = getattr(sync, name)
        else:
            theirs = getattr(theirs, "fget", None) or theirs
            ours, expected = inspect.signature(function), inspect.signature(theirs)
        assert ours == expected, f"{face.__name__}.{name}"
        assert function.__doc__ == theirs.__doc__, f"{face.__name__}.{name}"
