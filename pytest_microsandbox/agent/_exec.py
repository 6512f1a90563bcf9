"""EXEC streams on the host side: the request payload, output collection, and the handle callers hold."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from pytest_microsandbox.agent._connection import AgentConnection, Request, error_from_frame
from pytest_microsandbox.agent._wire import CHUNK_SIZE, STDIN_WINDOW, Fields, Frame, Msg, Tag, encode_fields
from pytest_microsandbox.agent.result import ExecResult
from pytest_microsandbox.errors import AgentTimeoutError, ExecError, ExecTimeoutError, InvalidConfigError

STDIN_NULL, STDIN_STREAM, STDIN_BYTES = 0, 1, 2
#: how long past its own timeout we wait for the agent's EXIT before giving up on it
TIMEOUT_GRACE_S = 5.0

OutputCallback = Callable[[bytes], None]


def exec_payload(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdin: bytes | str | None,
    stdin_stream: bool,
    pty: bool,
    timeout: float | None,
    rows: int = 24,
    cols: int = 80,
) -> bytes:
    if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
        raise InvalidConfigError("exec needs a non-empty argv of strings")
    fields: list = [(Tag.ARG, a) for a in argv]
    for key, value in (env or {}).items():
        if not key or "=" in key:
            raise InvalidConfigError(f"bad environment variable name: {key!r}")
        fields.append((Tag.ENV, f"{key}={value}"))
    if cwd is not None:
        fields.append((Tag.CWD, cwd))
    if stdin is not None:
        fields += [(Tag.STDIN_MODE, STDIN_BYTES), (Tag.STDIN_DATA, stdin.encode() if isinstance(stdin, str) else stdin)]
    elif stdin_stream:
        fields.append((Tag.STDIN_MODE, STDIN_STREAM))
    if pty:
        fields += [(Tag.PTY, 1), (Tag.ROWS, rows), (Tag.COLS, cols)]
    if timeout is not None:
        if timeout <= 0:
            raise InvalidConfigError("timeout must be positive")
        fields.append((Tag.TIMEOUT_MS, max(1, int(timeout * 1000))))
    return encode_fields(fields)


class ExecRequest(Request):
    """Collects STARTED, output chunks and EXIT of one command into an ExecResult."""

    def __init__(self, argv: Sequence[str], on_stdout: OutputCallback | None, on_stderr: OutputCallback | None) -> None:
        super().__init__("exec " + " ".join(argv)[:200])
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.started: Future[int] = Future()
        self.t0 = time.monotonic()
        self.pid: int | None = None
        self.window = threading.Condition()
        self.stdin_inflight = 0  # sent in STDIN frames, not yet acknowledged (at most STDIN_WINDOW)
        self.future.add_done_callback(lambda _f: self._wake_writers())

    def _wake_writers(self) -> None:
        with self.window:
            self.window.notify_all()

    def on_frame(self, frame: Frame) -> None:
        t = frame.type
        if t == Msg.STDOUT:
            self.stdout.append(frame.payload)
            if self.on_stdout:
                self.on_stdout(frame.payload)
        elif t == Msg.STDERR:
            self.stderr.append(frame.payload)
            if self.on_stderr:
                self.on_stderr(frame.payload)
        elif t == Msg.STDIN_ACK:
            with self.window:
                self.stdin_inflight = max(0, self.stdin_inflight - (Fields(frame.payload).int(Tag.SIZE, 0) or 0))
                self.window.notify_all()
        elif t == Msg.STARTED:
            self.pid = Fields(frame.payload).int(Tag.PID)
            if not self.started.done():
                self.started.set_result(self.pid or 0)
        elif t == Msg.EXIT:
            self.finish(self.result(Fields(frame.payload)))
        elif t == Msg.ERROR:
            exc = error_from_frame(frame, self.what)
            if isinstance(exc, OSError) and not self.started.done():
                exc = ExecError(exc.strerror)
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        if not self.started.done():
            self.started.set_exception(exc)
        super().fail(exc)

    def result(self, fields: Fields | None = None) -> ExecResult:
        out, err = b"".join(self.stdout), b"".join(self.stderr)
        code = fields.int(Tag.EXIT_CODE) if fields else None
        sig = fields.int(Tag.SIGNAL) if fields else None
        return ExecResult(
            exit_code=code,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            signal=sig,
            duration=time.monotonic() - self.t0,
            stdout_bytes=out,
            stderr_bytes=err,
            timed_out=bool(fields.int(Tag.TIMED_OUT, 0)) if fields else False,
            pid=self.pid,
        )


class ExecHandle:
    """A running command: feed stdin, signal it, wait for its ExecResult."""

    def __init__(self, conn: AgentConnection, request: ExecRequest, timeout: float | None) -> None:
        self._conn = conn
        self._req = request
        self.timeout = timeout

    @property
    def stream(self) -> int:
        return self._req.stream

    @property
    def future(self) -> Future[ExecResult]:
        return self._req.future

    def pid(self, timeout: float | None = 30.0) -> int:
        """The command's pid in the guest (waits for it to start)."""
        try:
            return self._req.started.result(timeout)
        except FutureTimeout:
            raise AgentTimeoutError(f"{self._req.what}: not started after {timeout:.0f} s") from None

    def write_stdin(self, data: bytes | str) -> None:
        """Send stdin, blocking while STDIN_WINDOW bytes wait unconsumed in the guest (so a command that does not
        read never stalls the connection). Input for a command that has exited is dropped."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        req = self._req
        # from a streaming callback (the reader thread) we must not wait: only that thread can see the acks
        may_wait = not self._conn.on_reader_thread()
        for i in range(0, len(raw), CHUNK_SIZE):
            chunk = raw[i : i + CHUNK_SIZE]
            with req.window:
                size = len(chunk)
                if may_wait:
                    req.window.wait_for(
                        lambda size=size: req.stdin_inflight + size <= STDIN_WINDOW or req.future.done()
                    )
                if req.future.done():
                    return
                req.stdin_inflight += len(chunk)
            self._conn.send(Msg.STDIN, req.stream, chunk)

    def close_stdin(self) -> None:
        self._conn.send(Msg.STDIN_CLOSE, self._req.stream)

    def kill(self, sig: int = 9) -> None:
        """Send ``sig`` to the command's process group (no-op once it exited)."""
        if not self._req.future.done():
            self._conn.send(Msg.KILL, self._req.stream, encode_fields([(Tag.SIGNAL, sig)]))

    def resize(self, rows: int, cols: int) -> None:
        self._conn.send(Msg.RESIZE, self._req.stream, encode_fields([(Tag.ROWS, rows), (Tag.COLS, cols)]))

    def done(self) -> bool:
        return self._req.future.done()

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Wait for the exit; raise ExecTimeoutError if the agent killed it on its timeout (or never answered)."""
        limit = timeout if timeout is not None else (self.timeout + TIMEOUT_GRACE_S if self.timeout else None)
        try:
            result = self._req.future.result(limit)
        except FutureTimeout:
            self.kill()
            partial = self._req.result()
            raise ExecTimeoutError(f"{self._req.what}: no exit after {limit:.1f} s", partial) from None
        return check_timeout(self._req.what, result)


def check_timeout(what: str, result: ExecResult) -> ExecResult:
    if result.timed_out:
        raise ExecTimeoutError(f"{what}: timed out and was killed", result)
    return result


def ensure_str_argv(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    return [os.fspath(a) for a in argv]
