"""The asynchronous sandbox (``await Sandbox.create(...)``): every call runs the synchronous implementation in a
worker thread. One implementation, two faces. Guest processes are started from one long-lived thread either way
(see ``_backend.on_spawner_thread``), so they die with this process, not with a worker thread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from pytest_microsandbox.agent import ExecResult
from pytest_microsandbox.mounts import MountConfig
from pytest_microsandbox.sandbox import _sync
from pytest_microsandbox.sandbox._sync import Home, LastExec
from pytest_microsandbox.store import SandboxRecord


class AsyncGuestFs:
    """Files inside the sandbox (async)."""

    def __init__(self, sandbox: _sync.Sandbox) -> None:
        self._sb = sandbox

    async def read(self, path: str) -> bytes:
        return await asyncio.to_thread(lambda: self._sb.fs.read(path))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return await asyncio.to_thread(lambda: self._sb.fs.read_text(path, encoding))

    async def write(self, path: str, data: bytes | str, **options) -> int:
        return await asyncio.to_thread(lambda: self._sb.fs.write(path, data, **options))

    async def list(self, path: str):
        return await asyncio.to_thread(lambda: self._sb.fs.list(path))

    async def stat(self, path: str):
        return await asyncio.to_thread(lambda: self._sb.fs.stat(path))

    async def exists(self, path: str) -> bool:
        return await asyncio.to_thread(lambda: self._sb.fs.exists(path))

    async def mkdir(self, path: str, **options) -> None:
        await asyncio.to_thread(lambda: self._sb.fs.mkdir(path, **options))

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await asyncio.to_thread(lambda: self._sb.fs.remove(path, recursive=recursive))


class Sandbox:
    """A sandbox (async face of ``pytest_microsandbox.sync.Sandbox``; same arguments, same semantics)."""

    def __init__(self, sync: _sync.Sandbox) -> None:
        self.sync = sync
        self.fs = AsyncGuestFs(sync)

    def __repr__(self) -> str:
        return repr(self.sync)

    @classmethod
    async def create(
        cls,
        name: str | None = None,
        *,
        image: str = "host",
        volumes: Mapping[str, MountConfig] | None = None,
        memory_mib: int = 512,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        security: str = "default",
        isolation: str | None = None,
        home: Home = None,
        boot_timeout: float = 60.0,
        labels: Mapping[str, str] | None = None,
    ) -> Sandbox:
        sync = await asyncio.to_thread(
            _sync.Sandbox.create, name, image=image, volumes=volumes, memory_mib=memory_mib, cpus=cpus, env=env,
            workdir=workdir, security=security, isolation=isolation, home=home, boot_timeout=boot_timeout,
            labels=labels)
        return cls(sync)

    @classmethod
    async def get(cls, name: str, *, home: Home = None) -> Sandbox:
        return cls(await asyncio.to_thread(_sync.Sandbox.get, name, home=home))

    @staticmethod
    async def list(*, home: Home = None) -> list[SandboxRecord]:
        return await asyncio.to_thread(_sync.Sandbox.list, home=home)

    @property
    def name(self) -> str:
        return self.sync.name

    @property
    def backend(self) -> str:
        return self.sync.backend

    @property
    def pid(self) -> int | None:
        return self.sync.pid

    @property
    def last_exec(self) -> LastExec | None:
        return self.sync.last_exec

    async def status(self) -> str:
        return await asyncio.to_thread(lambda: self.sync.status)

    async def exec(self, cmd: str | os.PathLike[str], *args: str | os.PathLike[str],
                   env: Mapping[str, str] | None = None, cwd: str | None = None, stdin: bytes | str | None = None,
                   timeout: float | None = None) -> ExecResult:
        return await asyncio.to_thread(self.sync.exec, cmd, *args, env=env, cwd=cwd, stdin=stdin, timeout=timeout)

    async def shell(self, script: str, **options) -> ExecResult:
        return await asyncio.to_thread(self.sync.shell, script, **options)

    def console_tail(self, lines: int = 40) -> str:
        return self.sync.console_tail(lines)

    async def stop(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.sync.stop, timeout)

    async def kill(self) -> None:
        await asyncio.to_thread(self.sync.kill)

    async def remove(self) -> None:
        await asyncio.to_thread(self.sync.remove)

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.remove()
