"""The agent protocol's wire format (``_vmcore/guest/PROTOCOL.md``): frames, field lists and the numbers.

The one definition of the protocol on the host: the clients, the VMM process (``vmm.template``) and the detached
relay (``sandbox._detached_owner``) all take the frame header and the agent's announcement from here. It imports
only the standard library, so the VMM process can load it without the clients.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PROTO_VERSION = 1
HEADER = struct.Struct("<BBHII")  # version, type, flags, stream, length
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 20
CHUNK_SIZE = 64 * 1024
#: stdin bytes a host may have sent on one stream that the agent has not acknowledged yet
STDIN_WINDOW = 1 << 20
_FIELD = struct.Struct("<HI")
_INT = struct.Struct("<q")


class Msg(enum.IntEnum):
    HELLO = 0x01
    PING = 0x02
    SHUTDOWN = 0x03
    BOOT = 0x04
    EXEC = 0x10
    STDIN = 0x11
    STDIN_CLOSE = 0x12
    KILL = 0x13
    RESIZE = 0x14
    FS_READ = 0x20
    FS_WRITE = 0x21
    FS_LIST = 0x22
    FS_STAT = 0x23
    FS_MKDIR = 0x24
    FS_REMOVE = 0x25
    DATA = 0x26
    DATA_END = 0x27
    OK = 0x80
    HELLO_REPLY = 0x81
    PONG = 0x82
    ERROR = 0x83
    STARTED = 0x90
    STDOUT = 0x91
    STDERR = 0x92
    EXIT = 0x93
    LIST = 0x94
    STDIN_ACK = 0x95


#: the first bytes of the agent's announcement (the HELLO reply it sends unasked when it starts serving): our protocol
#: version, HELLO_REPLY, flags 0, stream 0; a reader of a console port skips whatever comes before them (tty echo)
ANNOUNCEMENT_HEADER = HEADER.pack(PROTO_VERSION, Msg.HELLO_REPLY, 0, 0, 0)[: HEADER_SIZE - 4]


def frame_size(data: bytes | bytearray, offset: int = 0) -> int | None:
    """The whole size (header and payload) of the frame that starts at ``offset`` of ``data``, or None while its
    header is not all there yet."""
    if len(data) - offset < HEADER_SIZE:
        return None
    return HEADER_SIZE + HEADER.unpack_from(data, offset)[4]


class Tag(enum.IntEnum):
    ARG = 1
    ENV = 2
    CWD = 3
    STDIN_MODE = 4
    STDIN_DATA = 5
    PTY = 6
    ROWS = 7
    COLS = 8
    TIMEOUT_MS = 9
    SIGNAL = 10
    EXIT_CODE = 11
    TIMED_OUT = 12
    PID = 13
    PATH = 14
    MODE = 15
    PARENTS = 18
    RECURSIVE = 19
    CODE = 20
    MESSAGE = 21
    VERSION = 22
    NAME = 23
    KIND = 24
    SIZE = 25
    MTIME_NS = 26
    ENTRY = 27
    APPEND = 28
    RELEASE = 29
    BOOTED = 30
    HOSTNAME = 40
    ROOT = 41
    MOUNT = 42
    SOURCE_KIND = 43
    SOURCE = 44
    TARGET = 45
    FSTYPE = 46
    FLAGS = 47
    SIZE_MIB = 48
    RESTRICTED = 49
    ENTROPY = 50
    REALTIME_NS = 51


class ProtoError(enum.IntEnum):
    UNKNOWN_TYPE = 1001
    FRAME_TOO_LARGE = 1002
    BAD_VERSION = 1003
    MALFORMED = 1004
    STREAM_IN_USE = 1005
    NO_STREAM = 1006
    BAD_STATE = 1007


class WireError(ValueError):
    """Bytes that are not a valid frame or field list (raised by the decoders, never anything else)."""


@dataclass(frozen=True)
class Frame:
    type: int
    stream: int
    payload: bytes = b""
    version: int = PROTO_VERSION

    def encode(self) -> bytes:
        return encode_frame(self.type, self.stream, self.payload, version=self.version)


def encode_frame(type_: int, stream: int, payload: bytes = b"", *, version: int = PROTO_VERSION) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise WireError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(version, type_, 0, stream, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get every complete frame back.

    A header announcing more than ``max_payload`` bytes raises ``WireError``: the peer broke the protocol and the
    connection cannot be trusted any more.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        view = self._buf
        pos = 0
        while len(view) - pos >= HEADER_SIZE:
            version, type_, _flags, stream, length = HEADER.unpack_from(view, pos)
            if length > self._max:
                del view[:pos]
                raise WireError(f"frame payload of {length} bytes exceeds {self._max}")
            end = pos + HEADER_SIZE + length
            if end > len(view):
                break
            frames.append(Frame(type_, stream, bytes(view[pos + HEADER_SIZE : end]), version))
            pos = end
        del view[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


# ---- field lists ----

FieldValue = bytes | str | int | list[tuple[int, "FieldValue"]]


def encode_fields(fields: Iterable[tuple[int, FieldValue]]) -> bytes:
    """Encode ``(tag, value)`` pairs: str as UTF-8, int as 8 bytes, a list of pairs as a nested field list."""
    out = bytearray()
    for tag, value in fields:
        if isinstance(value, bool | int):
            raw = _INT.pack(int(value))
        elif isinstance(value, str):
            raw = value.encode()
        elif isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
        else:
            raw = encode_fields(value)
        out += _FIELD.pack(tag, len(raw))
        out += raw
    return bytes(out)


def iter_fields(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(tag, raw value)``; ``WireError`` when a field runs past the end."""
    pos, end = 0, len(payload)
    while pos < end:
        if end - pos < _FIELD.size:
            raise WireError("truncated field header")
        tag, length = _FIELD.unpack_from(payload, pos)
        pos += _FIELD.size
        if length > end - pos:
            raise WireError("field runs past the end of the payload")
        yield tag, payload[pos : pos + length]
        pos += length


class Fields:
    """A decoded field list with typed accessors (first occurrence wins, ``all`` for repeated tags)."""

    def __init__(self, payload: bytes) -> None:
        self._items = list(iter_fields(payload))

    def raw(self, tag: int) -> bytes | None:
        for t, v in self._items:
            if t == tag:
                return v
        return None

    def all(self, tag: int) -> list[bytes]:
        return [v for t, v in self._items if t == tag]

    def int(self, tag: int, default: int | None = None) -> int | None:
        v = self.raw(tag)
        if v is None:
            return default
        if len(v) != 8:
            raise WireError(f"field {tag} is not an 8-byte integer")
        return _INT.unpack(v)[0]

    def str(self, tag: int, default: str | None = None) -> str | None:
        v = self.raw(tag)
        return default if v is None else v.decode("utf-8", "replace")
