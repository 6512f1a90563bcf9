"""The asyncio client over the native socketpair."""

from __future__ import annotations

import asyncio
import signal

import pytest

from pytest_microsandbox.agent import AsyncAgentClient
from pytest_microsandbox.errors import ExecError, ExecTimeoutError


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_async_exec_concurrent_and_files(native_agent, tmp_path) -> None:
    async def main() -> None:
        async with AsyncAgentClient(native_agent.sock, owns_transport=False) as c:
            info = await c.wait_ready(10)
            assert info.version == 1
            results = await asyncio.gather(*(c.exec("sh", "-c", f"echo {i}") for i in range(30)))
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(30)]
            await c.fs.write(str(tmp_path / "f"), b"async")
            assert await c.fs.read(str(tmp_path / "f")) == b"async"
            assert [e.path for e in await c.fs.list(str(tmp_path))] == [str(tmp_path / "f")]
            assert await c.fs.exists(str(tmp_path / "f"))
            with pytest.raises(ExecError):
                await c.exec("/no/such/binary")

    run(main())


def test_async_streaming_stdin_kill_timeout(native_agent) -> None:
    async def main() -> None:
        async with AsyncAgentClient(native_agent.sock, owns_transport=False) as c:
            loop = asyncio.get_running_loop()
            chunks: list[bytes] = []
            got_first = asyncio.Event()

            def on_out(chunk: bytes) -> None:
                assert asyncio.get_running_loop() is loop  # callbacks run on our loop
                chunks.append(chunk)
                got_first.set()

            h = await c.start("cat", stdin_stream=True, on_stdout=on_out)
            await h.write_stdin(b"ping\n")
            await asyncio.wait_for(got_first.wait(), 30)
            h.close_stdin()
            r = await h.wait()
            assert b"".join(chunks) == b"ping\n" == r.stdout_bytes

            h = await c.start("sleep", "60")
            assert await h.pid() > 0
            h.kill(signal.SIGINT)
            assert (await h.wait()).signal == signal.SIGINT

            with pytest.raises(ExecTimeoutError):
                await c.exec("sleep", "60", timeout=0.3)

    run(main())
