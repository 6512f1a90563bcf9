"""Builds FUSE requests and parses replies, for feeding ``FuseServer`` directly (as a virtio-fs driver would)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from _vmcore.fs import FuseServer

IN_HEADER = struct.Struct("<IIQQIIIHH")     # len opcode unique nodeid uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("<IiQ")

OP = dict(LOOKUP=1, FORGET=2, GETATTR=3, SETATTR=4, READLINK=5, SYMLINK=6, MKNOD=8, MKDIR=9, UNLINK=10, RMDIR=11,
          RENAME=12, LINK=13, OPEN=14, READ=15, WRITE=16, STATFS=17, RELEASE=18, FSYNC=20, SETXATTR=21,
          GETXATTR=22, LISTXATTR=23, REMOVEXATTR=24, FLUSH=25, INIT=26, OPENDIR=27, READDIR=28, RELEASEDIR=29,
          FSYNCDIR=30, GETLK=31, ACCESS=34, CREATE=35, INTERRUPT=36, BMAP=37, DESTROY=38, IOCTL=39, POLL=40,
          BATCH_FORGET=42, FALLOCATE=43, READDIRPLUS=44, RENAME2=45, LSEEK=46, COPY_FILE_RANGE=47,
          SETUPMAPPING=48, SYNCFS=50, TMPFILE=51)
ROOT = 1


@dataclass
class Reply:
    length: int
    error: int
    unique: int
    body: bytes


def request(opcode: int, nodeid: int = ROOT, body: bytes = b"", unique: int = 7, length: int | None = None) -> bytes:
    total = IN_HEADER.size + len(body)
    return IN_HEADER.pack(total if length is None else length, opcode, unique, nodeid, 0, 0, 1, 0, 0) + body


def parse(raw: bytes) -> Reply:
    length, error, unique = OUT_HEADER.unpack_from(raw)
    assert length == len(raw), "reply length field must match the bytes produced"
    return Reply(length, error, unique, raw[OUT_HEADER.size:])


class Client:
    """A minimal FUSE client over ``FuseServer.handle``: just enough to drive it like a kernel would."""

    def __init__(self, server: FuseServer) -> None:
        self.server = server
        self.unique = 0

    def call(self, opcode: int, nodeid: int = ROOT, body: bytes = b"") -> Reply:
        self.unique += 2
        raw = self.server.handle(request(opcode, nodeid, body, self.unique))
        reply = parse(raw)
        assert reply.unique == self.unique
        return reply

    def init(self) -> Reply:
        return self.call(OP["INIT"], 0, struct.pack("<IIII", 7, 38, 131072, 0xFFFFFFFF) + bytes(48))

    def lookup(self, parent: int, name: bytes) -> Reply:
        return self.call(OP["LOOKUP"], parent, name + b"\0")

    def nodeid(self, parent: int, name: bytes) -> int:
        reply = self.lookup(parent, name)
        assert reply.error == 0, reply
        return struct.unpack_from("<Q", reply.body)[0]

    def open(self, nodeid: int, flags: int) -> Reply:
        return self.call(OP["OPEN"], nodeid, struct.pack("<II", flags, 0))

    def fh(self, reply: Reply) -> int:
        assert reply.error == 0, reply
        return struct.unpack_from("<Q", reply.body)[0]

    def read(self, nodeid: int, fh: int, offset: int, size: int) -> Reply:
        return self.call(OP["READ"], nodeid, struct.pack("<QQIIQII", fh, offset, size, 0, 0, 0, 0))

    def write(self, nodeid: int, fh: int, offset: int, data: bytes, size: int | None = None) -> Reply:
        n = len(data) if size is None else size
        return self.call(OP["WRITE"], nodeid, struct.pack("<QQIIQII", fh, offset, n, 0, 0, 0, 0) + data)

    def create(self, parent: int, name: bytes, flags: int, mode: int = 0o644) -> Reply:
        return self.call(OP["CREATE"], parent, struct.pack("<IIII", flags, mode, 0, 0) + name + b"\0")

    def mkdir(self, parent: int, name: bytes, mode: int = 0o755) -> Reply:
        return self.call(OP["MKDIR"], parent, struct.pack("<II", mode, 0) + name + b"\0")

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int = 0) -> Reply:
        return self.call(OP["MKNOD"], parent, struct.pack("<IIII", mode, rdev, 0, 0) + name + b"\0")

    def symlink(self, parent: int, name: bytes, target: bytes) -> Reply:
        return self.call(OP["SYMLINK"], parent, name + b"\0" + target + b"\0")

    def link(self, old: int, parent: int, name: bytes) -> Reply:
        return self.call(OP["LINK"], parent, struct.pack("<Q", old) + name + b"\0")

    def unlink(self, parent: int, name: bytes) -> Reply:
        return self.call(OP["UNLINK"], parent, name + b"\0")

    def rename2(self, parent: int, old: bytes, newdir: int, new: bytes, flags: int = 0) -> Reply:
        return self.call(OP["RENAME2"], parent, struct.pack("<QII", newdir, flags, 0) + old + b"\0" + new + b"\0")

    def setattr(self, nodeid: int, valid: int, *, size: int = 0, mode: int = 0, fh: int = 0) -> Reply:
        body = struct.pack("<IIQQQQQQIIIIIIII", valid, 0, fh, size, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0)
        return self.call(OP["SETATTR"], nodeid, body)

    def fallocate(self, nodeid: int, fh: int, offset: int, length: int, mode: int = 0) -> Reply:
        return self.call(OP["FALLOCATE"], nodeid, struct.pack("<QQQII", fh, offset, length, mode, 0))

    def statfs(self) -> tuple[int, ...]:
        reply = self.call(OP["STATFS"], ROOT)
        assert reply.error == 0
        return struct.unpack_from("<QQQQQII", reply.body)   # blocks bfree bavail files ffree bsize namelen


def attr_size(entry_or_attr_body: bytes, offset: int) -> int:
    """``fuse_attr.size`` inside an entry_out (offset 40) or attr_out (offset 16) body."""
    return struct.unpack_from("<Q", entry_or_attr_body, offset + 8)[0]
