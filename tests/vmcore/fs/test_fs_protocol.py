"""The server core fed raw requests: handshake, malformed input, lifetimes, and a bounded fuzz. Never a crash."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from fuse_wire import IN_HEADER, OP, ROOT, Client, parse, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _vmcore.fs import FuseServer


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    (root / "f").write_bytes(b"0123456789")
    (root / "d").mkdir()
    return root


@pytest.fixture
def client(share: Path) -> Client:
    c = Client(FuseServer(share, quota_mib=1))
    assert c.init().error == 0
    return c


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_init_handshake(share: Path) -> None:
    c = Client(FuseServer(share))
    assert c.lookup(ROOT, b"f").error == -errno.EIO                     # nothing before INIT
    reply = c.init()
    major, minor, _ra, _flags, _bg, _cong, max_write = struct.unpack_from("<IIIIHHI", reply.body)
    assert (reply.error, major, minor, max_write) == (0, 7, 38, 1 << 20)
    old = c.call(OP["INIT"], 0, struct.pack("<IIII", 7, 30, 0, 0))
    assert old.error == -errno.EPROTO                                   # we speak 7.31 and later
    newer = c.call(OP["INIT"], 0, struct.pack("<IIII", 8, 0, 0, 0))
    assert newer.error == 0 and struct.unpack_from("<II", newer.body) == (7, 38)   # the kernel retries with 7
    assert c.call(OP["DESTROY"], 0).error == 0
    assert c.lookup(ROOT, b"f").error == -errno.EIO


def test_short_and_lying_headers(client: Client) -> None:
    server = client.server
    for raw in (b"", b"\x01", bytes(39)):
        reply = parse(server.handle(raw))
        assert reply.error == -errno.EINVAL and reply.unique == 0
    claims_more = request(OP["LOOKUP"], ROOT, b"f\0", unique=99, length=4096)
    assert parse(server.handle(claims_more)).error == -errno.EINVAL
    claims_less = request(OP["LOOKUP"], ROOT, b"f\0", unique=98, length=20)
    assert parse(server.handle(claims_less)).error == -errno.EINVAL
    cut_name = request(OP["LOOKUP"], ROOT, b"f")                        # no NUL inside the body
    assert parse(server.handle(cut_name)).error == -errno.EINVAL
    padded = request(OP["LOOKUP"], ROOT, b"f\0") + b"garbage past the declared length"
    assert parse(server.handle(padded)).error == 0                      # the declared length rules


@pytest.mark.parametrize("opcode", [0, 7, 19, 31, 32, 33, 37, 39, 40, 48, 49, 50, 51, 4096, 0xFFFFFFFF])
def test_unknown_and_unsupported_opcodes_get_enosys(client: Client, opcode: int) -> None:
    assert client.call(opcode, ROOT, bytes(64)).error == -errno.ENOSYS


@pytest.mark.parametrize("op", ["GETATTR", "SETATTR", "OPEN", "READ", "WRITE", "MKDIR", "CREATE", "RENAME2",
                                "LINK", "FALLOCATE", "LSEEK", "COPY_FILE_RANGE", "READDIR", "READDIRPLUS",
                                "RELEASE", "FSYNC", "ACCESS", "MKNOD"])
def test_truncated_bodies_are_einval_not_overreads(client: Client, op: str) -> None:
    for size in (0, 1, 7, 15):
        reply = client.call(OP[op], ROOT, bytes(size))
        assert reply.error in (-errno.EINVAL, 0, -errno.EBADF, -errno.EISDIR), (op, size, reply)


def test_bad_handles_and_nodeids(client: Client) -> None:
    f = client.nodeid(ROOT, b"f")
    assert client.read(f, 12345, 0, 10).error == -errno.EBADF
    assert client.write(f, 12345, 0, b"x").error == -errno.EBADF
    assert client.call(OP["GETATTR"], 987654321, bytes(16)).error == -errno.EBADF
    dir_fh = client.fh(client.call(OP["OPENDIR"], ROOT, bytes(8)))
    assert client.read(f, dir_fh, 0, 10).error == -errno.EBADF         # a directory handle is not a file
    fh = client.fh(client.open(f, os.O_RDONLY))
    assert client.write(f, fh, 0, b"x").error == -errno.EBADF           # read-only handle
    lying = client.call(OP["WRITE"], f, struct.pack("<QQIIQII", fh, 0, 1 << 20, 0, 0, 0, 0) + b"short")
    assert lying.error == -errno.EINVAL                                 # claims more data than it carries
    assert client.read(f, fh, 1 << 62, 10).body == b""
    assert client.read(f, fh, (1 << 64) - 1, 10).error == -errno.EINVAL


def test_batch_forget_with_a_lying_count_reads_only_the_body(client: Client) -> None:
    f = client.nodeid(ROOT, b"f")
    body = struct.pack("<II", 0xFFFFFFFF, 0) + struct.pack("<QQ", f, 1)
    assert client.server.handle(request(OP["BATCH_FORGET"], 0, body)) == b""
    assert client.server.inode_count == 1                              # f forgotten, the root stays
    assert client.server.handle(request(OP["FORGET"], ROOT, struct.pack("<Q", 1 << 40))) == b""
    assert client.lookup(ROOT, b"f").error == 0


def test_lookups_forgets_and_handles_do_not_leak(client: Client) -> None:
    before = _fds()
    f = client.nodeid(ROOT, b"f")
    for _ in range(50):
        assert client.nodeid(ROOT, b"f") == f                           # one inode, counted lookups
        fh = client.fh(client.open(f, os.O_RDONLY))
        assert client.call(OP["RELEASE"], f, struct.pack("<QIIQ", fh, 0, 0, 0)).error == 0
    assert _fds() == before + 1
    client.server.handle(request(OP["FORGET"], f, struct.pack("<Q", 51)))
    assert _fds() == before and client.server.inode_count == 1 and client.server.handle_count == 0


def test_tiny_reply_buffers(client: Client) -> None:
    req = request(OP["GETATTR"], ROOT, bytes(16))
    assert client.server.handle_into(req, bytearray(4096)) == 16 + 104
    with pytest.raises(ValueError):
        client.server.handle_into(req, bytearray(32))
    big_read = bytearray(300)
    f = client.nodeid(ROOT, b"f")
    fh = client.fh(client.open(f, os.O_RDONLY))
    n = client.server.handle_into(request(OP["READ"], f, struct.pack("<QQIIQII", fh, 0, 1 << 20, 0, 0, 0, 0)),
                                  big_read)
    assert n == 26 and bytes(big_read[16:n]) == b"0123456789"


def test_readdir_resumes_from_offsets(share: Path, client: Client) -> None:
    for i in range(300):
        (share / "d" / f"n{i:03d}").write_bytes(b"")
    d = client.nodeid(ROOT, b"d")
    for op in ("READDIR", "READDIRPLUS"):
        fh = client.fh(client.call(OP["OPENDIR"], d, bytes(8)))
        names, offset = [], 0
        for _ in range(1000):
            body = client.call(OP[op], d, struct.pack("<QQIIQII", fh, offset, 1024, 0, 0, 0, 0)).body
            if not body:
                break
            pos = 0
            while pos < len(body):
                base = pos + (128 if op == "READDIRPLUS" else 0)
                _ino, offset, namelen, _type = struct.unpack_from("<QQII", body, base)
                names.append(body[base + 24:base + 24 + namelen].decode())
                pos = (base + 24 + namelen + 7) & ~7
        assert sorted(n for n in names if n not in (".", "..")) == [f"n{i:03d}" for i in range(300)]


_opcodes = st.sampled_from(sorted(OP.values()) + [0, 99, 4096])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opcode=_opcodes, nodeid=st.sampled_from([0, 1, 2, 3, 4, 2**64 - 1]), body=st.binary(max_size=200),
       length_delta=st.integers(-48, 48))
def test_fuzzed_requests_always_get_a_well_formed_reply(client: Client, opcode: int, nodeid: int, body: bytes,
                                                        length_delta: int) -> None:
    client.init()                  # an earlier example may have sent DESTROY, unlinked f, ...
    client.lookup(ROOT, b"f")
    client.lookup(ROOT, b"d")
    raw = request(opcode, nodeid, body, unique=5)
    length = max(0, min(2**32 - 1, len(raw) + length_delta))
    raw = IN_HEADER.pack(length, opcode, 5, nodeid, 0, 0, 1, 0, 0) + body
    out = client.server.handle(raw)
    if out:
        reply = parse(out)
        assert reply.unique == 5 and reply.error <= 0
    else:
        assert opcode in (OP["FORGET"], OP["BATCH_FORGET"])
    assert client.server.used_bytes <= 1 << 20


RAISE_LIMIT = """
import resource, sys
from _vmcore.fs import FuseServer
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))
FuseServer(sys.argv[1])
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_the_server_lifts_the_open_file_limit_as_far_as_it_may(share: Path) -> None:
    """Every inode a guest holds is a descriptor: the soft limit (1024 by default) would stop a guest's tree early."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RAISE_LIMIT, str(share)], capture_output=True, text=True, check=True)
    soft, hard = map(int, done.stdout.split())
    with open("/proc/sys/fs/nr_open") as f:
        ceiling = int(f.read())
    assert (soft, hard) == ((ceiling, ceiling) if _may_raise_hard_limits() else (4096, 4096))


def _may_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE (bit 24) in this process's effective set: root in a container often lacks it."""
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(effective >> 24 & 1)


def test_out_of_descriptors_is_emfile_to_the_guest_and_said_once_on_stderr(share: Path, capfd) -> None:
    import resource

    for i in range(64):
        (share / f"f{i}").write_bytes(b"")
    server = FuseServer(share)
    client = Client(server)
    client.init()
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 16, saved[1]))
    try:
        errors = [client.lookup(ROOT, f"f{i}".encode()).error for i in range(64)]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)
    assert errors[0] == 0 and -errno.EMFILE in errors
    assert set(errors) == {0, -errno.EMFILE}
    assert capfd.readouterr().err.count("msb-fs: out of file descriptors") == 1
    assert client.lookup(ROOT, b"f63").error == 0  # and it serves again once descriptors are there
