"""The asyncio agent client: the same requests as AgentClient, awaited (one implementation underneath)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TypeVar

from pytest_microsandbox.agent import _ops
from pytest_microsandbox.agent._connection import AgentConnection, Transport
from pytest_microsandbox.agent._exec import (
    TIMEOUT_GRACE_S,
    ExecHandle,
    ExecRequest,
    OutputCallback,
    check_timeout,
    ensure_str_argv,
    exec_payload,
)
from pytest_microsandbox.agent._ops import AgentInfo, GuestFsEntry
from pytest_microsandbox.agent._wire import Msg
from pytest_microsandbox.agent.result import ExecResult
from pytest_microsandbox.errors import AgentError, BootError, ExecTimeoutError

T = TypeVar("T")


async def _await(fut: Future[T], timeout: float | None = None) -> T:
    return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)


def _on_loop(callback: OutputCallback | None) -> OutputCallback | None:
    """Run a streaming callback on the caller's event loop instead of the reader thread."""
    if callback is None:
        return None
    loop = asyncio.get_running_loop()
    return lambda chunk: loop.call_soon_threadsafe(callback, chunk)


class AsyncGuestFs:
    def __init__(self, conn: AgentConnection) -> None:
        self._conn = conn

    async def read(self, path: str) -> bytes:
        return await _await(_ops.read(self._conn, path))

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def write(
        self, path: str, data: bytes | str, *, mode: int = 0o644, parents: bool = True, append: bool = False
    ) -> int:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        return await _await(_ops.write(self._conn, path, raw, mode=mode, parents=parents, append=append))

    async def list(self, path: str) -> list[GuestFsEntry]:
        return await _await(_ops.listdir(self._conn, path))

    async def stat(self, path: str) -> GuestFsEntry:
        return await _await(_ops.stat(self._conn, path))

    async def exists(self, path: str) -> bool:
        return await _await(_ops.exists(self._conn, path))

    async def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = True) -> None:
        await _await(_ops.mkdir(self._conn, path, mode=mode, parents=parents))

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await _await(_ops.remove(self._conn, path, recursive=recursive))


class AsyncExecHandle:
    def __init__(self, handle: ExecHandle) -> None:
        self.sync = handle

    async def pid(self) -> int:
        return await asyncio.wrap_future(self.sync._req.started)

    async def write_stdin(self, data: bytes | str) -> None:
        """Send stdin (waits, off the event loop, while the guest has a full window unconsumed)."""
        await asyncio.to_thread(self.sync.write_stdin, data)

    def close_stdin(self) -> None:
        self.sync.close_stdin()

    def kill(self, sig: int = 9) -> None:
        self.sync.kill(sig)

    async def wait(self) -> ExecResult:
        limit = self.sync.timeout + TIMEOUT_GRACE_S if self.sync.timeout else None
        try:
            result = await _await(self.sync.future, limit)
        except TimeoutError:
            self.kill()
            raise ExecTimeoutError(
                f"{self.sync._req.what}: no exit after {limit:.1f} s", self.sync._req.result()
            ) from None
        return check_timeout(self.sync._req.what, result)


class AsyncAgentClient:
    def __init__(self, transport: Transport, *, owns_transport: bool = True, await_announcement: bool = False) -> None:
        self._conn = AgentConnection(transport, owns_transport=owns_transport, await_announcement=await_announcement)
        self.fs = AsyncGuestFs(self._conn)

    async def hello(self) -> AgentInfo:
        return await _await(_ops.hello(self._conn))

    async def wait_ready(self, timeout: float) -> AgentInfo:
        """Wait up to ``timeout`` s for a booting guest's agent (its announcement, or a HELLO answer);
        ``BootError`` when it never answers."""
        try:
            return await _await(_ops.ready(self._conn), timeout)
        except TimeoutError:
            raise BootError(f"the guest agent did not answer within {timeout:.0f} s") from None
        except AgentError as e:
            raise BootError(f"the guest agent connection failed before it answered: {e}") from e

    async def ping(self, data: bytes = b"") -> bytes:
        return await _await(_ops.ping(self._conn, data))

    async def boot(self, config: bytes) -> None:
        await _await(_ops.boot(self._conn, config))

    async def start(
        self,
        *argv: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
        stdin_stream: bool = False,
        pty: bool = False,
        timeout: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> AsyncExecHandle:
        args = ensure_str_argv(argv)
        payload = exec_payload(args, env=env, cwd=cwd, stdin=stdin, stdin_stream=stdin_stream, pty=pty, timeout=timeout)
        request = ExecRequest(args, _on_loop(on_stdout), _on_loop(on_stderr))
        self._conn.open(request, Msg.EXEC, payload)
        return AsyncExecHandle(ExecHandle(self._conn, request, timeout))

    async def exec(self, *argv: str | os.PathLike[str], **options) -> ExecResult:
        handle = await self.start(*argv, **options)
        return await handle.wait()

    async def shell(self, command: str, **options) -> ExecResult:
        return await self.exec("/bin/sh", "-c", command, **options)

    async def shutdown(self) -> None:
        await _await(_ops.shutdown(self._conn))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._conn.close)

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
