"""The synchronous agent client: exec, shell, files, ping, boot and shutdown over one connection.

Many threads may use one client at once; each request runs on its own stream.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout

from pytest_microsandbox.agent import _ops
from pytest_microsandbox.agent._connection import AgentConnection, Transport
from pytest_microsandbox.agent._exec import ExecHandle, ExecRequest, OutputCallback, ensure_str_argv, exec_payload
from pytest_microsandbox.agent._ops import AgentInfo, GuestFsEntry
from pytest_microsandbox.agent._wire import Msg
from pytest_microsandbox.agent.result import ExecResult
from pytest_microsandbox.errors import AgentError, AgentTimeoutError, BootError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from concurrent.futures import Future
    from typing import TypeVar

    _T = TypeVar("_T")

#: how long control requests (hello, stat, mkdir, ...) may take before we call the agent unresponsive
DEFAULT_REQUEST_TIMEOUT = 60.0


def answer(fut: Future[_T], timeout: float, what: str) -> _T:
    """The request's answer, or ``AgentTimeoutError`` (never a bare built-in) when none came in ``timeout`` s."""
    try:
        return fut.result(timeout)
    except FutureTimeout:
        raise AgentTimeoutError(f"the guest agent did not answer {what} within {timeout:.0f} s") from None


class GuestFs:
    """Files inside the guest. A request the guest refuses raises ``GuestOSError`` (an OSError with the guest's
    errno: ``GuestFileNotFoundError`` is a FileNotFoundError, ...); one it never answers, ``AgentTimeoutError``."""

    def __init__(self, conn: AgentConnection, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self._conn = conn
        self._timeout = timeout

    def read(self, path: str) -> bytes:
        """The contents of a regular file in the guest."""
        return answer(_ops.read(self._conn, path), self._timeout, f"read {path}")

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The contents of a regular file in the guest, decoded."""
        return self.read(path).decode(encoding)

    def write(
        self, path: str, data: bytes | str, *, mode: int = 0o644, parents: bool = True, append: bool = False
    ) -> int:
        """Create, replace or (``append``) extend a guest file, its missing parent directories made unless
        ``parents=False``; returns the bytes written."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        return answer(_ops.write(self._conn, path, raw, mode=mode, parents=parents, append=append), self._timeout,
                      f"write {path}")

    def list(self, path: str) -> list[GuestFsEntry]:
        """The entries of a guest directory, sorted by path."""
        return answer(_ops.listdir(self._conn, path), self._timeout, f"list {path}")

    def stat(self, path: str) -> GuestFsEntry:
        """A guest path itself (a symlink is reported as one, not followed)."""
        return answer(_ops.stat(self._conn, path), self._timeout, f"stat {path}")

    def exists(self, path: str) -> bool:
        """Whether the guest path exists."""
        return answer(_ops.exists(self._conn, path), self._timeout, f"stat {path}")

    def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = True) -> None:
        """Make a guest directory; with ``parents``, its missing parents too and no error when it exists."""
        answer(_ops.mkdir(self._conn, path, mode=mode, parents=parents), self._timeout, f"mkdir {path}")

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a guest file or empty directory; with ``recursive``, a directory and all in it (never ``/``)."""
        answer(_ops.remove(self._conn, path, recursive=recursive), self._timeout, f"remove {path}")


class AgentClient:
    """Talks to one agent over ``transport`` (a connected socket or a byte-stream fd); closes it on ``close``."""

    def __init__(
        self,
        transport: Transport,
        *,
        owns_transport: bool = True,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        await_announcement: bool = False,
    ) -> None:
        """``await_announcement=True`` for a console port (a tty in the guest): send nothing until the agent has
        announced itself, and ignore what came before (echo); ``wait_ready`` then waits for that announcement."""
        self._conn = AgentConnection(transport, owns_transport=owns_transport, await_announcement=await_announcement)
        self._timeout = request_timeout
        self.fs = GuestFs(self._conn, request_timeout)

    @property
    def connection(self) -> AgentConnection:
        return self._conn

    def hello(self) -> AgentInfo:
        return answer(_ops.hello(self._conn), self._timeout, "hello")

    def wait_ready(self, timeout: float) -> AgentInfo:
        """Wait up to ``timeout`` s for a booting guest's agent (its announcement, or a HELLO answer);
        ``BootError`` when it never answers."""
        try:
            return _ops.ready(self._conn).result(timeout)
        except FutureTimeout:
            raise BootError(f"the guest agent did not answer within {timeout:.0f} s") from None
        except AgentError as e:
            raise BootError(f"the guest agent connection failed before it answered: {e}") from e

    def ping(self, data: bytes = b"") -> bytes:
        return answer(_ops.ping(self._conn, data), self._timeout, "ping")

    def boot(self, config: bytes) -> None:
        """Apply a boot config (see ``BootConfig.encode``) once."""
        answer(_ops.boot(self._conn, config), self._timeout, "the boot config")

    def start(
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
    ) -> ExecHandle:
        """Start a command and return at once. ``stdin`` bytes are fed and closed; ``stdin_stream=True`` keeps
        stdin open for ``write_stdin``; neither gives it /dev/null. Callbacks run on the client's reader thread."""
        args = ensure_str_argv(argv)
        payload = exec_payload(args, env=env, cwd=cwd, stdin=stdin, stdin_stream=stdin_stream, pty=pty, timeout=timeout)
        request = ExecRequest(args, on_stdout, on_stderr)
        self._conn.open(request, Msg.EXEC, payload)
        return ExecHandle(self._conn, request, timeout)

    def exec(self, *argv: str | os.PathLike[str], **options) -> ExecResult:
        """Run a command to its end. A non-zero exit is a result; ``ExecError`` means it could not run,
        ``ExecTimeoutError`` that it ran past ``timeout`` and was killed."""
        handle = self.start(*argv, **options)
        return handle.wait()

    def shell(self, command: str, **options) -> ExecResult:
        return self.exec("/bin/sh", "-c", command, **options)

    def shutdown(self) -> None:
        """Ask the agent to power the guest off (or to exit, when it is not PID 1)."""
        answer(_ops.shutdown(self._conn), self._timeout, "shutdown")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
