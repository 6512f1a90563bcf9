"""Every agent request as a function returning a Future of its final value: sync callers wait on it, async callers
wrap it. This is the one implementation behind AgentClient, AsyncAgentClient and their ``fs`` objects."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from pytest_microsandbox.agent._connection import AgentConnection, ReplyRequest
from pytest_microsandbox.agent._wire import PROTO_VERSION, Fields, Frame, Msg, Tag, encode_fields
from pytest_microsandbox.errors import AgentError, InvalidConfigError

T = TypeVar("T")
KINDS = {1: "file", 2: "dir", 3: "symlink", 4: "other"}


@dataclass(frozen=True)
class AgentInfo:
    version: int
    pid: int
    name: str
    kernel_release: str
    booted: bool
    boot_error: str = ""  # why the initramfs boot config failed, when it did


@dataclass(frozen=True)
class GuestFsEntry:
    """A file in the guest (``lstat``: a symlink is reported as one, not followed)."""

    path: str
    kind: str  # file | dir | symlink | other
    size: int
    mode: int
    modified: float  # seconds since the epoch


def chain(fut: Future[Any], convert: Callable[[Any], T]) -> Future[T]:
    out: Future[T] = Future()

    def done(f: Future[Any]) -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        try:
            out.set_result(convert(f.result()))
        except BaseException as e:
            out.set_exception(e)

    fut.add_done_callback(done)
    return out


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidConfigError(f"bad guest path: {path!r}")
    return path


def _entry(path: str, fields: Fields) -> GuestFsEntry:
    return GuestFsEntry(
        path=path,
        kind=KINDS.get(fields.int(Tag.KIND, 4) or 4, "other"),
        size=fields.int(Tag.SIZE, 0) or 0,
        mode=fields.int(Tag.MODE, 0) or 0,
        modified=(fields.int(Tag.MTIME_NS, 0) or 0) / 1e9,
    )


def _reply(conn: AgentConnection, what: str, type_: int, payload: bytes, expect: tuple[int, ...] = (Msg.OK,)):
    return conn.open(ReplyRequest(what, expect), type_, payload).future


def info_from_frame(frame: Frame) -> AgentInfo:
    f = Fields(frame.payload)
    version = f.int(Tag.VERSION, 0) or 0
    if version != PROTO_VERSION:
        raise AgentError(f"agent speaks protocol version {version}, we speak {PROTO_VERSION}")
    return AgentInfo(
        version,
        f.int(Tag.PID, 0) or 0,
        f.str(Tag.NAME, "") or "",
        f.str(Tag.RELEASE, "") or "",
        bool(f.int(Tag.BOOTED, 0)),
        f.str(Tag.MESSAGE, "") or "",
    )


def hello(conn: AgentConnection) -> Future[AgentInfo]:
    payload = encode_fields([(Tag.VERSION, PROTO_VERSION)])
    return chain(_reply(conn, "hello", Msg.HELLO, payload, (Msg.HELLO_REPLY,)), lambda v: info_from_frame(v[0]))


def ready(conn: AgentConnection) -> Future[AgentInfo]:
    """The agent's announcement where the connection waits for one, else a HELLO."""
    if conn.awaits_announcement:
        return chain(conn.announcement, info_from_frame)
    return hello(conn)


def ping(conn: AgentConnection, data: bytes = b"") -> Future[bytes]:
    return chain(_reply(conn, "ping", Msg.PING, data, (Msg.PONG,)), lambda v: v[0].payload)


def boot(conn: AgentConnection, config: bytes) -> Future[None]:
    return chain(_reply(conn, "boot config", Msg.BOOT, config), lambda _v: None)


def shutdown(conn: AgentConnection) -> Future[None]:
    return chain(_reply(conn, "shutdown", Msg.SHUTDOWN, b""), lambda _v: None)


def read(conn: AgentConnection, path: str) -> Future[bytes]:
    def convert(value: Any) -> bytes:
        return b"".join(p.payload for p in value[1] if p.type == Msg.DATA)

    payload = encode_fields([(Tag.PATH, _check_path(path))])
    return chain(_reply(conn, f"read {path}", Msg.FS_READ, payload, (Msg.DATA_END,)), convert)


def write(conn: AgentConnection, path: str, data: bytes, *, mode: int, parents: bool, append: bool) -> Future[int]:
    payload = encode_fields(
        [(Tag.PATH, _check_path(path)), (Tag.MODE, mode), (Tag.PARENTS, int(parents)), (Tag.APPEND, int(append))]
    )
    request = conn.open(ReplyRequest(f"write {path}"), Msg.FS_WRITE, payload)
    try:
        conn.send_data(Msg.DATA, request.stream, data)
        conn.send(Msg.DATA_END, request.stream)
    except AgentError as e:
        request.fail(e)
    return chain(request.future, lambda v: Fields(v[0].payload).int(Tag.SIZE, 0) or 0)


def listdir(conn: AgentConnection, path: str) -> Future[list[GuestFsEntry]]:
    def convert(value: Any) -> list[GuestFsEntry]:
        entries = []
        for part in value[1]:
            if part.type != Msg.LIST:
                continue
            for raw in Fields(part.payload).all(Tag.ENTRY):
                f = Fields(raw)
                entries.append(_entry(posixpath.join(path, f.str(Tag.NAME, "") or ""), f))
        return sorted(entries, key=lambda e: e.path)

    payload = encode_fields([(Tag.PATH, _check_path(path))])
    return chain(_reply(conn, f"list {path}", Msg.FS_LIST, payload), convert)


def stat(conn: AgentConnection, path: str) -> Future[GuestFsEntry]:
    payload = encode_fields([(Tag.PATH, _check_path(path))])
    return chain(_reply(conn, f"stat {path}", Msg.FS_STAT, payload), lambda v: _entry(path, Fields(v[0].payload)))


def exists(conn: AgentConnection, path: str) -> Future[bool]:
    out: Future[bool] = Future()

    def done(f: Future[GuestFsEntry]) -> None:
        exc = f.exception()
        if exc is None:
            out.set_result(True)
        elif isinstance(exc, FileNotFoundError | NotADirectoryError):
            out.set_result(False)
        else:
            out.set_exception(exc)

    stat(conn, path).add_done_callback(done)
    return out


def mkdir(conn: AgentConnection, path: str, *, mode: int, parents: bool) -> Future[None]:
    payload = encode_fields([(Tag.PATH, _check_path(path)), (Tag.MODE, mode), (Tag.PARENTS, int(parents))])
    return chain(_reply(conn, f"mkdir {path}", Msg.FS_MKDIR, payload), lambda _v: None)


def remove(conn: AgentConnection, path: str, *, recursive: bool) -> Future[None]:
    if posixpath.normpath(path) == "/":
        raise InvalidConfigError("refusing to remove the guest's root directory")
    payload = encode_fields([(Tag.PATH, _check_path(path)), (Tag.RECURSIVE, int(recursive))])
    return chain(_reply(conn, f"remove {path}", Msg.FS_REMOVE, payload), lambda _v: None)
