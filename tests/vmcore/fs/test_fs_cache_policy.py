"""What a share lets the guest's kernel remember, so a warm program costs few requests: a read-only share is opened
without asking (OPEN/OPENDIR answer ENOSYS once, then reads name the inode with file handle 0) and its missing
names are remembered (negative entries); a writable share keeps both off, so the guest sees at once what the host
adds and every read goes through a handle it opened."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from fuse_wire import OP, ROOT, Client

from _vmcore.fs import FuseServer

ENTRY = struct.Struct("<QQQQII")  # nodeid, generation, entry_valid, attr_valid, entry_valid_nsec, attr_valid_nsec


def _share(tmp_path: Path, **options) -> tuple[Client, int]:
    (tmp_path / "d").mkdir(parents=True)
    (tmp_path / "d" / "f").write_bytes(b"0123456789" * 1000)
    c = Client(FuseServer(tmp_path, **options))
    c.init()
    return c, c.nodeid(ROOT, b"d")


def test_a_read_only_share_is_opened_without_asking_and_read_by_inode(tmp_path: Path) -> None:
    c, d = _share(tmp_path, readonly=True, cache_timeout=30)
    f = c.nodeid(d, b"f")
    assert c.open(f, os.O_RDONLY).error == -errno.ENOSYS  # the kernel sets no_open: no OPEN or RELEASE again
    assert c.call(OP["OPENDIR"], d, struct.pack("<II", 0, 0)).error == -errno.ENOSYS
    assert c.read(f, 0, 9995, 100).body == b"56789"
    listing = c.call(OP["READDIRPLUS"], d, struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0))
    assert listing.error == 0 and b"f" in listing.body
    seek = c.call(OP["LSEEK"], f, struct.pack("<QQII", 0, 0, os.SEEK_DATA, 0))
    assert seek.error == 0 and struct.unpack("<Q", seek.body)[0] == 0
    assert c.call(OP["FSYNC"], f, struct.pack("<QII", 0, 0, 0)).error == 0
    assert c.read(d, 0, 0, 10).error == -errno.EISDIR  # a directory is not read as a file, nor the reverse
    assert c.call(OP["READDIR"], f, struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0)).error == -errno.ENOTDIR
    assert c.open(f, os.O_WRONLY).error == -errno.EROFS  # still refused, before anything else
    assert c.write(f, 0, 0, b"x").error == -errno.EROFS


def test_a_read_only_share_remembers_missing_names(tmp_path: Path) -> None:
    c, d = _share(tmp_path, readonly=True, cache_timeout=30)
    missing = c.lookup(d, b"nope")
    assert missing.error == 0  # a reply with node 0: the kernel keeps a negative dentry for entry_valid
    nodeid, _, entry_valid, _, nsec, _ = ENTRY.unpack_from(missing.body)
    assert (nodeid, entry_valid, nsec) == (0, 30, 0)
    c2, d2 = _share(tmp_path / "other", readonly=True, cache_timeout=30, negative_timeout=0)
    assert c2.lookup(d2, b"nope").error == -errno.ENOENT


def test_a_writable_share_opens_by_handle_and_forgets_missing_names(tmp_path: Path) -> None:
    c, d = _share(tmp_path, cache_timeout=30)
    f = c.nodeid(d, b"f")
    assert c.lookup(d, b"nope").error == -errno.ENOENT  # the host may add it: the guest asks again
    assert c.read(f, 0, 0, 10).error == -errno.EBADF  # no handle 0 here: reads go through an OPEN
    fh = c.fh(c.open(f, os.O_RDONLY))
    assert fh != 0 and c.read(f, fh, 0, 10).body == b"0123456789"


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged user")
def test_a_file_the_guest_may_not_read_says_so_on_read() -> None:
    """With no-open the guest's open succeeds without asking; the reopen behind its first read is where a missing
    permission shows, and it shows as itself (EACCES), not as a bad handle."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="msb-noopen-") as tmp:  # pytest's base is root's own (0700)
        _probe_unreadable(Path(tmp))


def _probe_unreadable(tmp_path: Path) -> None:
    import subprocess
    import sys

    tmp_path.chmod(0o755)
    (tmp_path / "secret").write_bytes(b"no")
    (tmp_path / "secret").chmod(0o000)
    probe = (
        "import os, struct, sys; sys.path[:0] = sys.argv[1:3]; from fuse_wire import ROOT, Client;"
        "from _vmcore.fs import FuseServer; c = Client(FuseServer(sys.argv[3], readonly=True)); c.init();"
        "f = c.nodeid(ROOT, b'secret'); print(c.open(f, os.O_RDONLY).error, c.read(f, 0, 0, 2).error)"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--", sys.executable,
                           "-c", probe, str(Path(__file__).parent), str(root), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(-errno.ENOSYS), str(-errno.EACCES)]


@pytest.mark.parametrize("value", [-1, -0.5])
def test_a_negative_timeout_is_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match="negative_timeout"):
        FuseServer(tmp_path, negative_timeout=value)
