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


def _rw(op: str, nodeid: int, fh: int, offset: int, size: int) -> bytes:
    return request(OP[op], nodeid, struct.pack("<QQIIQII", fh, offset, size, 0, 0, 0, 0),
                   length=80 + (size if op == "WRITE" else 0))


def _open_rw(tmp_path: Path, **options: object) -> tuple[FuseServer, int, int]:
    server = FuseServer(tmp_path, **options)
    c = Client(server)
    c.init()
    created = c.create(ROOT, b"data", os.O_RDWR)
    assert created.error == 0, created
    return server, struct.unpack_from("<Q", created.body)[0], struct.unpack_from("<Q", created.body, 128)[0]


def test_write_from_scattered_guest_pages(tmp_path: Path) -> None:
    server, nodeid, fh = _open_rw(tmp_path)
    g = FakeGuest()
    payload = os.urandom(10_000)
    raw = _rw("WRITE", nodeid, fh, 100, len(payload))
    segments = [g.put(raw[:40]), g.put(raw[40:] + payload[:3]), g.put(payload[3:4099]), g.put(payload[4099:]),
                g.room(16), g.room(8)]
    used = serve_chain(server, g.base, MEM, segments)
    reply = parse(g.got(segments, used))
    assert reply.error == 0 and struct.unpack_from("<I", reply.body)[0] == len(payload)
    assert (tmp_path / "data").read_bytes() == bytes(100) + payload


def test_read_into_scattered_guest_pages(tmp_path: Path) -> None:
    server, nodeid, fh = _open_rw(tmp_path)
    content = os.urandom(9000)
    (tmp_path / "data").write_bytes(content)
    g = FakeGuest()
    segments = [g.put(_rw("READ", nodeid, fh, 10, 8192)), g.room(16), g.room(5), g.room(4091), g.room(4096)]
    used = serve_chain(server, g.base, MEM, segments)
    reply = parse(g.got(segments, used))
    assert reply.error == 0 and reply.body == content[10:10 + 8192]
    near_end = [g.put(_rw("READ", nodeid, fh, 8990, 4096)), g.room(16), g.room(4096)]
    assert parse(g.got(near_end, serve_chain(server, g.base, MEM, near_end))).body == content[8990:]
    bad = [g.put(_rw("READ", nodeid, 777, 0, 10)), g.room(16), g.room(10)]
    assert parse(g.got(bad, serve_chain(server, g.base, MEM, bad))).error == -errno.EBADF


def test_data_path_keeps_every_rule(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"d" * ((1 << 20) - (32 << 10)))  # the quota's last 32 KiB are left
    server, nodeid, fh = _open_rw(tmp_path, quota_mib=1)
    g = FakeGuest()
    lying = [g.put(_rw("WRITE", nodeid, fh, 0, 5000)[:80] + b"short"), g.room(16), g.room(8)]
    assert parse(g.got(lying, serve_chain(server, g.base, MEM, lying))).error == -errno.EINVAL
    near_limit = [g.put(_rw("WRITE", nodeid, fh, (1 << 20) - (32 << 10), 64 << 10)), g.put(b"x" * (64 << 10)),
                  g.room(24)]
    reply = parse(g.got(near_limit, serve_chain(server, g.base, MEM, near_limit)))
    assert reply.error == 0 and 0 < struct.unpack_from("<I", reply.body)[0] < 32 << 10   # cut at the quota
    end = (tmp_path / "data").stat().st_size
    full = [g.put(_rw("WRITE", nodeid, fh, end, 32 << 10)), g.put(b"y" * (32 << 10)), g.room(24)]
    assert parse(g.got(full, serve_chain(server, g.base, MEM, full))).error == -errno.ENOSPC
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_bytes(b"")
    ro = FuseServer(tmp_path / "ro", readonly=True, no_open=False)  # a handle to refuse a write through
    c = Client(ro)
    c.init()
    f = c.nodeid(ROOT, b"f")
    rofh = c.fh(c.open(f, os.O_RDONLY))
    write = [g.put(_rw("WRITE", f, rofh, 0, 1)), g.put(b"z"), g.room(24)]
    assert parse(g.got(write, serve_chain(ro, g.base, MEM, write))).error == -errno.EROFS
    assert (tmp_path / "ro" / "f").read_bytes() == b""
