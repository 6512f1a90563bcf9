"""Escape attempts, as a guest would make them: through the mount (the real kernel client) and as raw requests.

The share's relative symlinks point at ``../outside``: followed on the host by the server that would be the real
``outside/sentinel``; followed by the client (legitimately, in its own namespace) it is the empty ``decoy``.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fs_layout import Layout
from fuse_wire import OP, ROOT, Client

from _vmcore.fs import FuseMount, FuseServer

O_RDONLY, O_WRONLY, O_RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR


@pytest.fixture
def client(layout: Layout) -> Client:
    server = FuseServer(layout.share, cache_timeout=0)
    c = Client(server)
    assert c.init().error == 0
    return c


def test_dotdot_at_the_root_stays_on_the_client_side(layout: Layout, mount_share: Callable[..., FuseMount]) -> None:
    before = layout.outside_state()
    mount_share()
    mnt = layout.mountpoint
    assert os.path.samefile(mnt / "..", layout.mountpoint.parent)  # the client's parent, never the share's
    assert sorted(os.listdir(mnt / "..")) == ["mnt", "outside"]
    with pytest.raises(FileNotFoundError):
        (mnt / ".." / "outside" / "sentinel").read_bytes()
    assert layout.outside_state() == before


@pytest.mark.parametrize("name", [b"..", b".", b"", b"a/b", b"/etc", b"x" * 256])
def test_bad_names_refused_by_the_server(client: Client, name: bytes) -> None:
    for reply in (client.lookup(ROOT, name), client.mkdir(ROOT, name), client.unlink(ROOT, name),
                  client.create(ROOT, name, O_WRONLY), client.symlink(ROOT, name, b"t"),
                  client.rename2(ROOT, name, ROOT, b"ok"), client.rename2(ROOT, b"ok", ROOT, name)):
        assert reply.error in (-errno.EINVAL, -errno.ENAMETOOLONG)


def test_symlinks_out_followed_by_open_create_unlink(layout: Layout,
                                                     mount_share: Callable[..., FuseMount]) -> None:
    os.symlink("../outside", layout.share / "evil_dir")
    os.symlink("../outside/sentinel", layout.share / "evil_file")
    before = layout.outside_state()
    mount_share(cache_timeout=0)
    mnt = layout.mountpoint
    with pytest.raises(FileNotFoundError):
        (mnt / "evil_file").read_bytes()
    with pytest.raises(FileNotFoundError):
        os.open(mnt / "evil_file", O_WRONLY | os.O_TRUNC)
    with pytest.raises(OSError) as info:
        os.open(mnt / "evil_file", O_RDONLY | os.O_NOFOLLOW)
    assert info.value.errno == errno.ELOOP
    with pytest.raises(FileNotFoundError):
        os.unlink(mnt / "evil_dir" / "sentinel")
    (mnt / "evil_dir" / "planted").write_bytes(b"x")  # the client resolves it: lands in its own ../outside
    assert (layout.decoy / "planted").read_bytes() == b"x"
    os.unlink(mnt / "evil_file")  # removes the link itself, never its target
    assert layout.outside_state() == before


def test_symlink_inodes_are_never_followed_by_the_server(layout: Layout, client: Client) -> None:
    os.symlink("../outside", layout.share / "evil_dir")
    os.symlink("../outside/sentinel", layout.share / "evil_file")
    before = layout.outside_state()
    d, f = client.nodeid(ROOT, b"evil_dir"), client.nodeid(ROOT, b"evil_file")
    assert client.open(f, O_RDONLY).error == -errno.ELOOP
    assert client.open(f, O_RDWR | os.O_TRUNC).error == -errno.ELOOP
    assert client.call(OP["OPENDIR"], d, struct.pack("<II", 0, 0)).error == -errno.ENOTDIR
    assert client.lookup(d, b"sentinel").error == -errno.ENOTDIR
    assert client.create(d, b"new", O_WRONLY).error == -errno.ENOTDIR
    assert client.mkdir(d, b"new").error == -errno.ENOTDIR
    assert client.unlink(d, b"sentinel").error == -errno.ENOTDIR
    assert client.symlink(d, b"s", b"x").error == -errno.ENOTDIR
    assert client.rename2(d, b"sentinel", ROOT, b"stolen").error == -errno.ENOTDIR
    assert client.setattr(f, 1 << 3, size=0).error == -errno.EINVAL  # truncate
    assert client.setattr(f, 1 << 0, mode=0o777).error == -errno.EOPNOTSUPP  # chmod
    readlink = client.call(OP["READLINK"], f)
    assert readlink.error == 0 and readlink.body == b"../outside/sentinel"
    # A hard link to a symlink links the symlink itself: still nothing of the outside inside the share.
    assert client.link(f, ROOT, b"hard").error == 0
    assert stat.S_ISLNK(os.lstat(layout.share / "hard").st_mode)
    assert layout.sentinel.stat().st_nlink == 1
    assert layout.outside_state() == before


def test_directory_swapped_for_a_symlink_on_the_host(layout: Layout,
                                                     mount_share: Callable[..., FuseMount]) -> None:
    (layout.share / "d").mkdir()
    before = layout.outside_state()
    mount_share(cache_timeout=0)
    mnt = layout.mountpoint
    dirfd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(layout.share / "d", layout.share / "d_old")      # the host swaps the directory...
        os.symlink("../outside", layout.share / "d")                # ...for a symlink to the outside
        fd = os.open("new", os.O_CREAT | O_WRONLY, 0o644, dir_fd=dirfd)
        os.write(fd, b"held inode")
        os.close(fd)
        assert (layout.share / "d_old" / "new").read_bytes() == b"held inode"
        with pytest.raises(FileNotFoundError):
            os.stat("sentinel", dir_fd=dirfd)
        (mnt / "d" / "via_path").write_bytes(b"p")  # a fresh lookup sees a symlink, resolved by the client
        assert (layout.decoy / "via_path").exists()
    finally:
        os.close(dirfd)
    assert layout.outside_state() == before


def test_directory_swapped_for_a_symlink_while_the_guest_works(layout: Layout,
                                                               mount_share: Callable[..., FuseMount]) -> None:
    """A racing thread flips ``d`` between a directory and a symlink to ../outside through the mount while
    another creates, writes, renames and unlinks beneath it."""
    (layout.share / "d").mkdir()
    before = layout.outside_state()
    mount_share(cache_timeout=0)
    mnt = layout.mountpoint
    stop = time.monotonic() + 1.5
    failures: list[BaseException] = []

    def flipper() -> None:
        try:
            while time.monotonic() < stop:
                os.rename(mnt / "d", mnt / "d_real")
                os.symlink("../outside", mnt / "d")
                os.unlink(mnt / "d")
                os.rename(mnt / "d_real", mnt / "d")
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    thread = threading.Thread(target=flipper)
    thread.start()
    rounds = 0
    while time.monotonic() < stop:
        for op in ("create", "rename", "unlink"):
            try:
                if op == "create":
                    (mnt / "d" / "f").write_bytes(b"racing")
                elif op == "rename":
                    os.rename(mnt / "d" / "f", mnt / "d" / "sentinel")
                else:
                    os.unlink(mnt / "d" / "sentinel")
            except OSError:
                pass  # losing the race is fine; escaping is not
        rounds += 1
    thread.join(timeout=30)
    assert not failures and rounds > 0
    assert layout.outside_state() == before


def test_hard_links_to_outside_inodes_are_impossible(layout: Layout, client: Client,
                                                     mount_share: Callable[..., FuseMount]) -> None:
    assert client.link(999_999, ROOT, b"x").error == -errno.EBADF    # never-seen node ids
    assert client.link(ROOT, ROOT, b"x").error == -errno.EPERM       # directories
    mount_share()
    with pytest.raises(OSError) as info:
        os.link(layout.sentinel, layout.mountpoint / "stolen")
    assert info.value.errno == errno.EXDEV
    assert layout.sentinel.stat().st_nlink == 1


def test_no_device_nodes_or_sockets(layout: Layout, client: Client, mount_share: Callable[..., FuseMount]) -> None:
    assert client.mknod(ROOT, b"null", stat.S_IFCHR | 0o666, os.makedev(1, 3)).error == -errno.EPERM
    assert client.mknod(ROOT, b"blk", stat.S_IFBLK | 0o666, os.makedev(7, 0)).error == -errno.EPERM
    assert client.mknod(ROOT, b"sock", stat.S_IFSOCK | 0o666).error == -errno.EPERM
    assert client.rename2(ROOT, b"a", ROOT, b"b", 4).error == -errno.EINVAL   # RENAME_WHITEOUT
    mount_share()
    with pytest.raises(PermissionError):
        os.mknod(layout.mountpoint / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert os.listdir(layout.share) == []


def test_xattrs_are_a_clear_enosys(layout: Layout, client: Client, mount_share: Callable[..., FuseMount]) -> None:
    assert client.call(OP["GETXATTR"], ROOT, struct.pack("<II", 0, 0) + b"user.a\0").error == -errno.ENOSYS
    mount_share()
    (layout.mountpoint / "f").write_bytes(b"")
    with pytest.raises(OSError) as info:
        os.setxattr(layout.mountpoint / "f", "user.a", b"1")
    assert info.value.errno == errno.EOPNOTSUPP


PSEUDO_FS_PROBE = r"""
import os, subprocess, sys
sys.path[:0] = sys.argv[1:3]
from fuse_wire import ROOT, Client
from _vmcore.fs import FuseServer
share = sys.argv[3]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", "proc", "proc", f"{share}/proc"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", f"{share}/scratch"], check=True)
c = Client(FuseServer(share, readonly=True))
c.init()
print(c.lookup(ROOT, b"proc").error, c.lookup(ROOT, b"scratch").error, c.lookup(ROOT, b"plain").error)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a procfs in a private mount namespace")
def test_a_share_never_serves_the_hosts_proc_or_sys_mounted_in_it(tmp_path: Path) -> None:
    """The host image shares '/': its /proc is the host's, where /proc/PID/root leads into every process's files.
    A mount of a kernel-answered file system inside a share is refused; other mounts (a tmpfs) are served."""
    import subprocess
    import sys

    for d in ("proc", "scratch", "plain"):
        (tmp_path / d).mkdir()
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(["unshare", "-m", sys.executable, "-c", PSEUDO_FS_PROBE, str(Path(__file__).parent),
                           str(root), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(-errno.EACCES), "0", "0"]


@pytest.mark.parametrize("flags", [O_WRONLY, O_RDONLY, O_RDWR])
def test_create_on_an_existing_fifo_is_refused_without_waiting_for_a_peer(layout: Layout, client: Client,
                                                                          flags: int) -> None:
    """A hostile guest's CREATE (no O_EXCL) of a name that is a FIFO: opening it would wait in open() for the other
    end forever and hold the server. It is refused at once, as every non-regular file is; the FIFO is untouched."""
    os.mkfifo(layout.share / "pipe")
    outcome: list[int] = []
    worker = threading.Thread(target=lambda: outcome.append(client.create(ROOT, b"pipe", flags).error), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert outcome in ([-errno.EACCES], [-errno.ENXIO]), "CREATE waited on the FIFO"  # ENXIO: O_WRONLY, no reader
    assert stat.S_ISFIFO(os.lstat(layout.share / "pipe").st_mode)


def test_create_of_a_regular_file_keeps_blocking_io(client: Client, layout: Layout) -> None:
    import fcntl

    reply = client.create(ROOT, b"plain", O_WRONLY)
    assert reply.error == 0
    server_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    plain = [fd for fd in server_fds if _is(fd, layout.share / "plain")]
    assert plain and all(not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK for fd in plain)


def _is(fd: int, path: Path) -> bool:
    try:
        return os.path.samefile(f"/proc/self/fd/{fd}", path)
    except OSError:
        return False
