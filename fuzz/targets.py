"""The guest-facing parsers as fuzz targets: each takes bytes a hostile guest controls and must answer with a
reply or one of its own typed errors, never crash, hang or touch anything outside its share.

    fuse_request     a FUSE request as the virtio-fs and /dev/fuse transports hand it to our server
    virtqueue        descriptor tables and rings in guest RAM, as virtio devices walk them
    fs_chain         a virtio-fs request scattered over guest buffers (the chain transport of the FUSE server)
    agent_frames     frames and fields from the guest agent, as the host decodes them
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from pytest_microsandbox.agent._wire import Fields, FrameDecoder, WireError, iter_fields

from _vmcore.devices.virtqueue import Virtqueue, VirtqueueError
from _vmcore.fs.chain import ChainError, serve_chain
from _vmcore.fs.server import FuseServer
from _vmcore.memory import GuestMemory

FUSE_INIT = 26
INIT_BODY = struct.pack("<IIII", 7, 31, 1 << 20, 0xFFFFFFFF) + bytes(48)
_share = tempfile.mkdtemp(prefix="msb-fuzz-share-")
os.makedirs(os.path.join(_share, "d"), exist_ok=True)
with open(os.path.join(_share, "f"), "wb") as f:
    f.write(b"0123456789" * 100)
_servers: dict[bool, FuseServer] = {}


def _server(readonly: bool) -> FuseServer:
    server = _servers.get(readonly)
    if server is None or server.inode_count > 10_000:
        if server is not None:
            server.close()
        server = _servers[readonly] = FuseServer(_share, readonly=readonly, quota_mib=None if readonly else 4)
        header = struct.pack("<IIQQIIII", 40 + len(INIT_BODY), FUSE_INIT, 1, 0, 0, 0, 0, 0)
        server.handle(header + INIT_BODY)
    return server


def fuse_request(data: bytes) -> None:
    if not data:
        return
    _server(bool(data[0] & 1)).handle(data[1:])


def virtqueue(data: bytes) -> None:
    if len(data) < 16:
        return
    size = 1 << (data[0] % 9)
    desc, avail, used = struct.unpack_from("<HHH", data, 1)
    mem = GuestMemory(1 << 16)
    mem.write(0, data[16:16 + (1 << 16)])
    queue = Virtqueue(256)
    queue.size = size
    queue.desc_addr, queue.avail_addr, queue.used_addr = desc * 16, avail * 2, used * 4
    try:
        queue.attach(mem)
        for _ in range(8):
            chain = queue.pop()
            if chain is None:
                break
            chain.read_readable(0, 4096)
            chain.write_writable(0, b"reply")
            queue.add_used(chain.head, 5)
    except VirtqueueError:
        pass


def fs_chain(data: bytes) -> None:
    """Byte 0: how many segments (the later half device-writable) and which server; then (addr, length) pairs;
    then guest RAM."""
    if len(data) < 33:
        return
    count = data[0] % 8 + 1
    segments = []
    for i in range(count):
        addr, length = struct.unpack_from("<HH", data, 1 + 4 * i)
        segments.append((addr, length, i >= (count + 1) // 2))
    mem = GuestMemory(1 << 16)
    mem.write(0, data[33:33 + (1 << 16)])
    try:
        serve_chain(_server(bool(data[0] & 0x80)), mem.address, 1 << 16, segments)
    except ChainError:
        pass


def agent_frames(data: bytes) -> None:
    decoder = FrameDecoder(max_payload=1 << 16)
    try:
        for frame in decoder.feed(data):
            fields = Fields(frame.payload)
            for tag, _ in iter_fields(frame.payload):
                fields.raw(tag)
                fields.int(tag)
                fields.str(tag)
    except (WireError, ValueError):
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "fuse_request": fuse_request, "virtqueue": virtqueue, "fs_chain": fs_chain, "agent_frames": agent_frames}
