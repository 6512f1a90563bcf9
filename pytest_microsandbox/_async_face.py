"""The async faces of the sync classes, built from them: one implementation, two faces.

A face wraps one sync object (``_sync``) and names what it offers, one line each; every member keeps the sync
member's name, signature and docstring:

    class VolumeFs(AsyncFace):
        read = awaited(sync.VolumeFs.read)                    # await fs.read(path): the sync method in a thread
        name = delegated(sync.VolumeHandle.name)              # a property (or a plain method), read from _sync
        create = awaited_constructor(sync.Volume.create)      # await Volume.create(...): the face of what it made
        get = awaited_static(sync.Volume.get, returns=VolumeHandle)

Awaited calls run in a worker thread (``asyncio.to_thread``), looking the member up on the sync object there, so a
sync property that does I/O (``Sandbox.status``) is awaited too. What a face does beyond delegation (context
managers, its constructor) it writes itself.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["AsyncFace", "awaited", "awaited_constructor", "awaited_static", "delegated"]

Member = Callable[..., Any] | property
_GENERATED = "__async_face_member__"


class AsyncFace:
    """Base of an async face: holds the sync object it wraps and names it in its repr."""

    _sync: Any

    def __init__(self, sync: Any) -> None:
        self._sync = sync

    def __repr__(self) -> str:
        return repr(self._sync)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Name the generated members as the face's own (module, qualified name), for ``help()`` and tracebacks."""
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            for function in (getattr(value, "__func__", None), getattr(value, "fget", None), value):
                if getattr(function, _GENERATED, False):
                    function.__module__ = cls.__module__
                    function.__qualname__ = f"{cls.__qualname__}.{name}"


def awaited(member: Member, *, returns: Callable[[Any], Any] | None = None) -> Callable[..., Any]:
    """An async method: the sync method (or property) of the same name on ``self._sync``, run in a worker thread;
    ``returns`` wraps its result (a face class)."""
    name, is_property = _name_of(member)

    async def method(self: AsyncFace, /, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            value = getattr(self._sync, name)
            return value if is_property else value(*args, **kwargs)

        result = await asyncio.to_thread(run)
        return result if returns is None else returns(result)

    return _like(method, member)


def awaited_static(function: Callable[..., Any], *, returns: Callable[[Any], Any] | None = None) -> staticmethod:
    """An async static method: ``function`` (a sync static or class method) run in a worker thread; ``returns``
    wraps its result."""

    async def method(*args: Any, **kwargs: Any) -> Any:
        result = await asyncio.to_thread(function, *args, **kwargs)
        return result if returns is None else returns(result)

    return staticmethod(_like(method, function))


def awaited_constructor(function: Callable[..., Any]) -> classmethod:
    """An async class method that makes a sync object with ``function`` in a worker thread and returns the face
    (the class it was called on) of it."""

    async def method(cls: type[AsyncFace], /, *args: Any, **kwargs: Any) -> Any:
        return cls(await asyncio.to_thread(function, *args, **kwargs))

    return classmethod(_like(method, function, prepend="cls"))


def delegated(member: Member, *, returns: Callable[[Any], Any] | None = None) -> Any:
    """The sync property or plain method of the same name, not awaited (it does no I/O); ``returns`` wraps a
    property's value."""
    name, is_property = _name_of(member)
    if is_property:
        def get(self: AsyncFace) -> Any:
            value = getattr(self._sync, name)
            return value if returns is None else returns(value)

        return property(_like(get, member), doc=member.__doc__)

    def method(self: AsyncFace, /, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._sync, name)(*args, **kwargs)

    return _like(method, member)


def _name_of(member: Member) -> tuple[str, bool]:
    if isinstance(member, property):
        return member.fget.__name__, True
    return member.__name__, False


def _like(function: Callable[..., Any], member: Member, *, prepend: str | None = None) -> Any:
    """``function`` dressed as ``member``: its name, docstring and signature (with a first parameter ``prepend``
    put in front: the ``cls`` of a class method made from a function that does not take it)."""
    original = member.fget if isinstance(member, property) else member
    signature = inspect.signature(original)
    if prepend is not None:
        first = inspect.Parameter(prepend, inspect.Parameter.POSITIONAL_ONLY)
        signature = signature.replace(parameters=[first, *signature.parameters.values()])
    function.__name__ = original.__name__
    function.__doc__ = original.__doc__
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__annotations__ = dict(getattr(original, "__annotations__", {}))
    setattr(function, _GENERATED, True)
    return function
