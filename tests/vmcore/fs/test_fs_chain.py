"""``serve_chain``: FUSE requests carried in descriptor-chain segments of a (stand-in) guest memory."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path

import pytest
from fuse_wire import OP, ROOT, Client, parse, request

from _vmcore.fs import ChainError, FuseServer, serve_chain

MEM = 1 << 20


class FakeGuest:
    """A bytearray standing in for guest RAM, with a bump allocator for request and reply buffers."""

    def __init__(self) -> None:
        self.ram = bytearray(MEM)
        self.base = ctypes.addressof((ctypes.c_char * MEM).from_buffer(self.ram))
        self.next = 0x1000

    def put(self, data: bytes) -> tuple[int, int, bool]:
        addr = self.next
        self.ram[addr:addr + len(data)] = data
        self.next += (len(data) + 63) & ~63
        return (addr, len(data), False)

    def room(self, size: int) -> tuple[int, int, bool]:
        addr = self.next
        self.next += (size + 63) & ~63
        return (addr, size, True)

    def got(self, segments: list[tuple[int, int, bool]], used: int) -> bytes:
        out = b"".join(bytes(self.ram[a:a + n]) for a, n, w in segments if w)
        return out[:used]


@pytest.fixture
def server(tmp_path: Path) -> FuseServer:
    (tmp_path / "f").write_bytes(b"hello virtio-fs")
    s = FuseServer(tmp_path)
    assert Client(s).init().error == 0
    return s


def test_split_request_and_scattered_reply(server: FuseServer) -> None:
    g = FakeGuest()
    raw = request(OP["LOOKUP"], ROOT, b"f\0")
    segments = [g.put(raw[:40]), g.put(raw[40:]), g.room(16), g.room(128)]   # as Linux lays out the args
    used = serve_chain(server, g.base, MEM, segments)
    reply = parse(g.got(segments, used))
    assert reply.error == 0 and len(reply.body) == 128


def test_read_into_one_big_buffer_directly(server: FuseServer) -> None:
    g = FakeGuest()
    c = Client(server)
    f = c.nodeid(ROOT, b"f")
    fh = c.fh(c.open(f, os.O_RDONLY))
    segments = [g.put(request(OP["READ"], f, struct.pack("<QQIIQII", fh, 0, 4096, 0, 0, 0, 0))), g.room(4096 + 16)]
    used = serve_chain(server, g.base, MEM, segments)
    assert parse(g.got(segments, used)).body == b"hello virtio-fs"


def test_forget_on_hiprio_has_no_reply(server: FuseServer) -> None:
    g = FakeGuest()
    assert serve_chain(server, g.base, MEM, [g.put(request(OP["FORGET"], 5, struct.pack("<Q", 1)))]) == 0


def test_reply_larger_than_the_buffers_becomes_eio(server: FuseServer) -> None:
    g = FakeGuest()
    segments = [g.put(request(OP["LOOKUP"], ROOT, b"f\0")), g.room(16), g.room(16)]
    used = serve_chain(server, g.base, MEM, segments)
    assert used == 16 and parse(g.got(segments, used)).error == -errno.EIO


@pytest.mark.parametrize("segments", [
    [(MEM - 8, 40, False)],                                 # past the end of guest memory
    [((1 << 64) - 8, 40, False)],                           # wrapping around
    [(0x1000, 16, True), (0x2000, 40, False)],              # readable after writable
    [(0x1000, 2 << 20, False)],                             # larger than any request
])
def test_bad_chains_are_refused(server: FuseServer, segments: list[tuple[int, int, bool]]) -> None:
    g = FakeGuest()
    with pytest.raises(ChainError):
        serve_chain(server, g.base, MEM, segments)


def test_garbage_requests_in_chains(server: FuseServer) -> None:
    g = FakeGuest()
    for body in (b"", b"\xff" * 7, b"\x00" * 39, os.urandom(300)):
        segments = [g.put(body)] if body else []
        segments.append(g.room(64))
        used = serve_chain(server, g.base, MEM, segments)
        assert used in (0, 16)
