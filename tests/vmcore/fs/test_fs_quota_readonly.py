"""Quota (ENOSPC once the tree's blocks reach the limit, one account per directory, statfs says so) and read-only
shares (EROFS from the server itself)."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable

import pytest
from fs_layout import Layout
from fuse_wire import OP, ROOT, Client, attr_size

from _vmcore.fs import FuseMount, FuseServer

MIB = 1 << 20
CHUNK = 64 << 10
BLOCK = 4096


def _fill(path: os.PathLike[str], chunk: int = CHUNK) -> int:
    """Append ``chunk``-sized writes until ENOSPC; returns the bytes written."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    written = 0
    try:
        for _ in range(10_000):
            try:
                written += os.write(fd, b"q" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                return written
    finally:
        os.close(fd)
    raise AssertionError("quota never enforced")


def test_writes_stop_at_the_limit_with_enospc(layout: Layout, mount_share: Callable[..., FuseMount]) -> None:
    (layout.share / "seed").write_bytes(b"s" * (256 << 10))   # what is there at the start is counted
    fm = mount_share(quota_mib=1)
    mnt = layout.mountpoint
    base = fm.server.used_bytes
    assert base >= 256 << 10
    sv = os.statvfs(mnt)
    assert sv.f_blocks * sv.f_frsize == MIB
    assert sv.f_bavail * sv.f_frsize == (MIB - base) // sv.f_frsize * sv.f_frsize
    written = _fill(mnt / "big")
    assert MIB - base - CHUNK - 4 * BLOCK <= written <= MIB - base   # stops within a request of the limit
    assert fm.server.used_bytes <= MIB
    assert os.statvfs(mnt).f_bavail <= 4
    fd = os.open(mnt / "big", os.O_WRONLY)  # overwriting allocated bytes in place costs nothing
    try:
        assert os.pwrite(fd, b"Q" * CHUNK, 0) == CHUNK
    finally:
        os.close(fd)
    os.unlink(mnt / "big")                  # freeing gives the space back
    assert fm.server.used_bytes == base
    assert abs(_fill(mnt / "again") - written) <= CHUNK


def test_blocks_are_charged_not_sizes(layout: Layout, mount_share: Callable[..., FuseMount]) -> None:
    """A sparse file costs what it allocates; fallocate and copy_file_range are charged; what a directory, a
    symlink or an empty file costs is charged too (thousands of them cannot slip past the limit)."""
    (layout.share / "src").write_bytes(b"c" * (512 << 10))
    fm = mount_share(quota_mib=1)
    mnt = layout.mountpoint
    os.truncate(mnt / "src", 2 * MIB)                          # a hole allocates nothing
    assert (mnt / "src").stat().st_size == 2 * MIB
    fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        with pytest.raises(OSError) as info:
            os.posix_fallocate(fd, 0, MIB)
        assert info.value.errno == errno.ENOSPC
        os.posix_fallocate(fd, 0, 128 << 10)
        src = os.open(mnt / "src", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as info:
                for _ in range(100):
                    assert os.copy_file_range(src, fd, 256 << 10) > 0
            assert info.value.errno == errno.ENOSPC
        finally:
            os.close(src)
    finally:
        os.close(fd)
    assert fm.server.used_bytes <= MIB
    made = 0
    with pytest.raises(OSError) as info:
        for i in range(100_000):
            kind = i % 3
            if kind == 0:
                os.mkdir(mnt / f"d{i}")
            elif kind == 1:
                os.symlink("x" * 200, mnt / f"l{i}")
            else:
                (mnt / f"e{i}").touch()
            made += 1
    assert info.value.errno == errno.ENOSPC and made < 1000
    real = sum(p.lstat().st_blocks * 512 + 256 for p in layout.share.rglob("*"))
    assert real <= MIB + 8 * BLOCK and fm.server.used_bytes <= MIB


def test_two_servers_of_one_directory_share_one_account(layout: Layout) -> None:
    one, two = FuseServer(layout.share, quota_mib=1), FuseServer(layout.share, quota_mib=1)
    try:
        clients = [Client(one), Client(two)]
        handles = []
        for i, c in enumerate(clients):
            c.init()
            created = c.create(ROOT, f"f{i}".encode(), os.O_RDWR)
            handles.append((struct.unpack_from("<Q", created.body)[0], struct.unpack_from("<Q", created.body, 128)[0]))
        written = 0
        for _ in range(40):
            for c, (nodeid, fh) in zip(clients, handles, strict=True):
                size = os.stat(layout.share / f"f{clients.index(c)}").st_size
                reply = c.write(nodeid, fh, size, b"w" * CHUNK)
                if reply.error == 0:
                    written += struct.unpack_from("<I", reply.body)[0]
        assert written <= MIB and one.used_bytes == two.used_bytes <= MIB
    finally:
        one.close()
        two.close()


def test_quota_through_raw_requests(layout: Layout) -> None:
    c = Client(FuseServer(layout.share, quota_mib=1))
    c.init()
    created = c.create(ROOT, b"f", os.O_RDWR)
    assert created.error == 0
    nodeid = struct.unpack_from("<Q", created.body)[0]
    fh = struct.unpack_from("<Q", created.body, 128)[0]
    assert c.write(nodeid, fh, 0, b"x" * (900 << 10)).error == 0
    reply = c.write(nodeid, fh, 900 << 10, b"x" * (200 << 10))        # only part fits: a short write
    assert reply.error == 0 and 0 < struct.unpack_from("<I", reply.body)[0] < 200 << 10
    size = os.stat(layout.share / "f").st_size
    assert c.write(nodeid, fh, size, b"y" * CHUNK).error == -errno.ENOSPC
    assert c.setattr(nodeid, 1 << 3, size=2 * MIB).error == 0             # a hole: nothing allocated
    assert c.fallocate(nodeid, fh, 0, 4 * MIB, mode=1).error == -errno.ENOSPC  # KEEP_SIZE preallocation counts
    for mode in (0x08, 0x20, 0x40, 0x04):  # COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, NO_HIDE_STALE
        assert c.fallocate(nodeid, fh, 0, 4096, mode=mode).error == -errno.EOPNOTSUPP
    blocks, bfree, bavail, *_ = c.statfs()
    assert bavail <= 64
    shrunk = c.setattr(nodeid, 1 << 3, size=4096)
    assert shrunk.error == 0 and attr_size(shrunk.body, 16) == 4096
    assert c.write(nodeid, fh, 4096, b"z" * 4096).error == 0


def test_readonly_refuses_every_mutation_through_the_mount(layout: Layout,
                                                           mount_share: Callable[..., FuseMount]) -> None:
    (layout.share / "f").write_bytes(b"content")
    (layout.share / "d").mkdir()
    os.symlink("f", layout.share / "l")
    mount_share(readonly=True)
    mnt = layout.mountpoint
    assert (mnt / "f").read_bytes() == b"content" and os.readlink(mnt / "l") == "f"
    attempts = {
        "open-w": lambda: os.open(mnt / "f", os.O_WRONLY),
        "open-rw": lambda: os.open(mnt / "f", os.O_RDWR),
        "open-trunc": lambda: os.open(mnt / "f", os.O_RDONLY | os.O_TRUNC),
        "create": lambda: os.open(mnt / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        "mkdir": lambda: os.mkdir(mnt / "nd"),
        "mkfifo": lambda: os.mkfifo(mnt / "fifo"),
        "unlink": lambda: os.unlink(mnt / "f"),
        "rmdir": lambda: os.rmdir(mnt / "d"),
        "rename": lambda: os.rename(mnt / "f", mnt / "g"),
        "link": lambda: os.link(mnt / "f", mnt / "h"),
        "symlink": lambda: os.symlink("f", mnt / "s"),
        "chmod": lambda: os.chmod(mnt / "f", 0o600),
        "chown": lambda: os.chown(mnt / "f", 1, 1),
        "utime": lambda: os.utime(mnt / "f", (1, 1)),
        "truncate": lambda: os.truncate(mnt / "f", 0),
        "setxattr": lambda: os.setxattr(mnt / "f", "user.x", b"1"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, what
    assert (layout.share / "f").read_bytes() == b"content"
    assert sorted(os.listdir(layout.share)) == ["d", "f", "l"]


def test_readonly_refuses_every_mutating_request(layout: Layout) -> None:
    (layout.share / "f").write_bytes(b"content")
    c = Client(FuseServer(layout.share, readonly=True, no_open=False))  # handles to refuse writes through
    c.init()
    f = c.nodeid(ROOT, b"f")
    fh = c.fh(c.open(f, os.O_RDONLY))
    assert c.read(f, fh, 0, 100).body == b"content"
    refused = [
        c.open(f, os.O_WRONLY), c.open(f, os.O_RDONLY | os.O_TRUNC), c.create(ROOT, b"n", os.O_WRONLY),
        c.write(f, fh, 0, b"x"), c.setattr(f, 1 << 3, size=0), c.setattr(f, 1 << 0, mode=0o600),
        c.mkdir(ROOT, b"d"), c.mknod(ROOT, b"p", 0o10644), c.symlink(ROOT, b"s", b"f"), c.link(f, ROOT, b"h"),
        c.unlink(ROOT, b"f"), c.call(OP["RMDIR"], ROOT, b"f\0"), c.rename2(ROOT, b"f", ROOT, b"g"),
        c.call(OP["RENAME"], ROOT, struct.pack("<Q", ROOT) + b"f\0g\0"), c.fallocate(f, fh, 0, 10),
        c.call(OP["COPY_FILE_RANGE"], f, struct.pack("<QQQQQQQ", fh, 0, f, fh, 0, 10, 0)),
        c.call(OP["SETXATTR"], f, struct.pack("<IIII", 1, 0, 0, 0) + b"user.a\0x"),
        c.call(OP["REMOVEXATTR"], f, b"user.a\0"), c.call(OP["ACCESS"], f, struct.pack("<II", 2, 0)),
    ]
    assert [r.error for r in refused] == [-errno.EROFS] * len(refused)
    assert (layout.share / "f").read_bytes() == b"content"
