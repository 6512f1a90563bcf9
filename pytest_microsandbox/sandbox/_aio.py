"""The asynchronous sandbox (``await Sandbox.create(...)``): every call runs the synchronous implementation in a
worker thread (``_async_face``). One implementation, two faces. Guest processes are started from one long-lived
thread either way (see ``_backend.on_spawner_thread``), so they die with this process, not with a worker thread."""

from __future__ import annotations

from pytest_microsandbox._async_face import AsyncFace, awaited, awaited_constructor, awaited_static, delegated
from pytest_microsandbox.agent import client
from pytest_microsandbox.sandbox import _sandbox
from pytest_microsandbox.sandbox._sandbox import LastExec


class GuestFs(AsyncFace):
    """Files inside the sandbox (async face of the sync sandbox's ``fs``)."""

    def __init__(self, sandbox: _sandbox.Sandbox) -> None:
        self._sandbox = sandbox

    def __repr__(self) -> str:
        return f"<GuestFs of {self._sandbox!r}>"

    @property
    def _sync(self) -> client.GuestFs:
        return self._sandbox.fs  # looked up on each call (in its worker thread): a stopped sandbox says so

    read = awaited(client.GuestFs.read)
    read_text = awaited(client.GuestFs.read_text)
    write = awaited(client.GuestFs.write)
    list = awaited(client.GuestFs.list)
    stat = awaited(client.GuestFs.stat)
    exists = awaited(client.GuestFs.exists)
    mkdir = awaited(client.GuestFs.mkdir)
    remove = awaited(client.GuestFs.remove)


class Sandbox(AsyncFace):
    """A sandbox (async face of ``pytest_microsandbox.sync.Sandbox``; same arguments, same semantics).

        async with await Sandbox.create(image="python:3.12") as sb:
            assert (await sb.exec("python3", "-c", "print(4)")).stdout == "4\\n"
    """

    def __init__(self, sync: _sandbox.Sandbox) -> None:
        super().__init__(sync)
        self.sync = sync
        self.fs = GuestFs(sync)

    create = awaited_constructor(_sandbox.Sandbox.create)
    get = awaited_constructor(_sandbox.Sandbox.get)
    list = awaited_static(_sandbox.Sandbox.list)

    name = delegated(_sandbox.Sandbox.name)
    backend = delegated(_sandbox.Sandbox.backend)
    pid = delegated(_sandbox.Sandbox.pid)
    console_tail = delegated(_sandbox.Sandbox.console_tail)
    status = awaited(_sandbox.Sandbox.status)

    @property
    def last_exec(self) -> LastExec | None:
        """The last command run in it and what it printed (None before the first), for failure reports."""
        return self.sync.last_exec

    exec = awaited(_sandbox.Sandbox.exec)
    shell = awaited(_sandbox.Sandbox.shell)
    stop = awaited(_sandbox.Sandbox.stop)
    kill = awaited(_sandbox.Sandbox.kill)
    remove = awaited(_sandbox.Sandbox.remove)

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remove()
