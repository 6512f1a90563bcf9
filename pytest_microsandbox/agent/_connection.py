"""One connection to an agent: a reader thread that routes frames to their stream, and serialized writes.

Sync and async callers share this implementation: every request completes a ``concurrent.futures.Future``, which
sync code waits on and async code wraps with ``asyncio.wrap_future``.
"""

from __future__ import annotations

import errno as _errno
import itertools
import os
import select
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from pytest_microsandbox.agent._wire import (
    ANNOUNCEMENT_HEADER,
    CHUNK_SIZE,
    Fields,
    Frame,
    FrameDecoder,
    Msg,
    ProtoError,
    Tag,
    WireError,
    encode_frame,
)
from pytest_microsandbox.errors import AgentError, GuestOSError

Transport = socket.socket | int
SOCKET_BUFFER = 4 << 20


def error_from_frame(frame: Frame, what: str) -> Exception:
    """An ERROR frame as a typed exception: GuestOSError (an OSError: FileNotFoundError for ENOENT, ...) for errno
    codes, AgentError for protocol codes."""
    try:
        fields = Fields(frame.payload)
        code = fields.int(Tag.CODE, 0) or 0
        message = fields.str(Tag.MESSAGE, "") or ""
    except WireError:
        code, message = ProtoError.MALFORMED, "malformed ERROR frame"
    if 0 < code < 1000:
        return GuestOSError.for_errno(code, message or os.strerror(code), what)
    return AgentError(f"agent refused {what}: {message} (code {code})", code)


class Request:
    """The host side of one stream. Subclasses consume frames; ``future`` completes with the result."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.future: Future[Any] = Future()
        self.stream = 0

    def on_frame(self, frame: Frame) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def finish(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)


class ReplyRequest(Request):
    """A request answered by a single frame of ``expect`` (or ERROR), collecting LIST/DATA frames before it."""

    def __init__(self, what: str, expect: tuple[int, ...] = (Msg.OK,)) -> None:
        super().__init__(what)
        self.expect = expect
        self.parts: list[Frame] = []

    def on_frame(self, frame: Frame) -> None:
        if frame.type == Msg.ERROR:
            self.fail(error_from_frame(frame, self.what))
        elif frame.type in self.expect:
            self.finish((frame, self.parts))
        else:
            self.parts.append(frame)


class AgentConnection:
    """Frames in and out over a socket or a plain byte-stream fd (a virtio-console port, a pipe pair's ends)."""

    def __init__(self, transport: Transport, *, owns_transport: bool = True, await_announcement: bool = False) -> None:
        """``await_announcement``: discard input until the agent's announcement (a HELLO reply on stream 0) and send
        nothing before it: on a console port (a tty) bytes sent before the agent made it raw come back as echo."""
        if isinstance(transport, socket.socket):
            self._sock: socket.socket | None = transport
            self._fd = transport.fileno()
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):  # bulk output: fewer, larger reads
                try:
                    transport.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
        else:
            self._sock = None
            self._fd = transport
        os.set_blocking(self._fd, True)
        self._owns = owns_transport
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._streams: dict[int, Request] = {}
        self._ids = itertools.count(1)
        self._closed: BaseException | None = None
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        self._decoder = FrameDecoder()
        self._synced = threading.Event()
        self._sync_buf = b""
        self.awaits_announcement = await_announcement
        if not await_announcement:
            self._synced.set()
        self.announcement: Future[Frame] = Future()
        self._reader = threading.Thread(target=self._read_loop, name="msb-agent-reader", daemon=True)
        self._reader.start()

    # ---- requests ----

    def open(self, request: Request, type_: int, payload: bytes) -> Request:
        with self._lock:
            if self._closed is not None:
                raise AgentError(f"agent connection is closed: {self._closed}")
            while True:
                sid = next(self._ids) & 0xFFFFFFFF
                if sid and sid not in self._streams:
                    break
            request.stream = sid
            self._streams[sid] = request
        try:
            self.send(type_, sid, payload)
        except BaseException:
            self._drop(sid)
            raise
        request.future.add_done_callback(lambda _f: self._drop(sid))
        return request

    def _drop(self, sid: int) -> None:
        with self._lock:
            self._streams.pop(sid, None)

    def send(self, type_: int, stream: int, payload: bytes = b"") -> None:
        data = encode_frame(type_, stream, payload)
        self._synced.wait()  # set by the announcement, or when the connection closes
        with self._write_lock:
            if self._closed is not None:
                raise AgentError(f"agent connection is closed: {self._closed}")
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError as e:
                raise AgentError(f"writing to the agent failed: {e}") from e

    def send_data(self, type_: int, stream: int, data: bytes) -> None:
        """Send ``data`` as a run of frames of at most CHUNK_SIZE bytes."""
        for i in range(0, len(data), CHUNK_SIZE):
            self.send(type_, stream, data[i : i + CHUNK_SIZE])

    # ---- reading ----

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        reason: BaseException = AgentError("the agent closed the connection")
        try:
            while True:
                events = dict(poller.poll())
                if self._wake_r in events:
                    reason = AgentError("the connection was closed by this side")
                    return
                if not events:
                    continue
                try:
                    data = os.read(self._fd, 1 << 20)
                except OSError as e:
                    if e.errno in (_errno.EINTR, _errno.EAGAIN):
                        continue
                    reason = AgentError(f"reading from the agent failed: {e}")
                    return
                if not data:
                    return
                if not self._synced.is_set():
                    data = self._skip_to_announcement(data)
                for frame in self._decoder.feed(data):
                    self._route(frame)
        except WireError as e:
            reason = AgentError(f"the agent broke the protocol: {e}")
        except BaseException as e:  # never let the reader die silently
            reason = AgentError(f"agent reader failed: {e!r}")
        finally:
            self._shutdown(reason)
            if self._closing:  # close() was called on this thread (from a callback)
                self._release()

    def _skip_to_announcement(self, data: bytes) -> bytes:
        """Drop bytes up to the announcement's header; what follows it is protocol."""
        buf = self._sync_buf + data
        at = buf.find(ANNOUNCEMENT_HEADER)
        if at < 0:
            self._sync_buf = buf[-(len(ANNOUNCEMENT_HEADER) - 1) :]
            return b""
        self._sync_buf = b""
        self._synced.set()
        return buf[at:]

    def _route(self, frame: Frame) -> None:
        if frame.stream == 0 and frame.type == Msg.HELLO_REPLY:
            try:
                self.announcement.set_result(frame)
            except InvalidStateError:
                pass  # a later announcement (the agent restarted serving): nothing waits for it
            return
        with self._lock:
            request = self._streams.get(frame.stream)
        if request is None:
            return  # late frames of a finished stream (e.g. errors for DATA after a failed open)
        try:
            request.on_frame(frame)
        except WireError as e:
            request.fail(AgentError(f"malformed answer to {request.what}: {e}"))
        except Exception as e:  # a user callback raised: fail that request only, and stop what it runs
            request.fail(e)
            if frame.type in (Msg.STDOUT, Msg.STDERR):
                try:
                    self.send(Msg.KILL, frame.stream)
                except AgentError:
                    pass

    def _shutdown(self, reason: BaseException) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
        self._synced.set()  # unblock senders: they now fail with the reason
        try:
            self.announcement.set_exception(AgentError(f"no announcement from the agent: {self._closed}"))
        except InvalidStateError:
            pass  # it came
        with self._lock:
            pending = list(self._streams.values())
            self._streams.clear()
        for request in pending:
            request.fail(AgentError(f"{request.what}: {self._closed}"))

    # ---- lifetime ----

    def on_reader_thread(self) -> bool:
        """True inside streaming callbacks (they run on the reader thread)."""
        return threading.current_thread() is self._reader

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def close(self) -> None:
        """Stop the reader, fail what is pending, and close the transport if we own it. Safe from any thread,
        a streaming callback included (the reader then finishes the job when its loop ends)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if self._reader.is_alive():
            os.write(self._wake_w, b"x")
            if threading.current_thread() is self._reader:
                return
            self._reader.join(timeout=5)
        self._release()

    def _release(self) -> None:
        self._shutdown(AgentError("the connection was closed by this side"))
        with self._lock:
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        if fds[0] < 0:
            return
        for fd in fds:
            os.close(fd)
        if self._owns:
            if self._sock is not None:
                self._sock.close()
            else:
                try:
                    os.close(self._fd)
                except OSError:
                    pass


Callback = Callable[[bytes], None]
