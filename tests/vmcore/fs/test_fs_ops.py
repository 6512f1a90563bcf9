"""File operations with identical results on a plain directory and through our FUSE server (``where``)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from pathlib import Path

import pytest

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100

# giving files to other owners (chown, setfsuid) takes CAP_CHOWN/CAP_SETUID: root
_needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="gives files to other owners: needs root")


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_create_read_write_append(where: Path) -> None:
    f = where / "a.txt"
    f.write_bytes(b"hello")
    with open(f, "ab") as fh:
        fh.write(b" world")
    with open(f, "r+b") as fh:
        fh.seek(2)
        fh.write(b"LL")
    assert f.read_bytes() == b"heLLo world"
    with pytest.raises(FileExistsError):
        os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fd = os.open(where / "b.bin", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.pwrite(fd, b"x" * 300_000, 0)
        assert os.pread(fd, 10, 299_995) == b"xxxxx"
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)
    assert (where / "b.bin").stat().st_size == 300_000


def test_truncate_down_and_up(where: Path) -> None:
    f = where / "t"
    f.write_bytes(b"0123456789")
    os.truncate(f, 4)
    assert f.read_bytes() == b"0123"
    os.truncate(f, 8)
    assert f.read_bytes() == b"0123\0\0\0\0"
    with open(f, "wb"):  # O_TRUNC on open
        pass
    assert f.stat().st_size == 0


def test_fallocate_copy_file_range_and_seek_hole(where: Path) -> None:
    f = where / "alloc"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
        os.pwrite(fd, b"data", 4096)
        dst = os.open(where / "copy", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            assert os.copy_file_range(fd, dst, 8192, 0, 0) == 8192
            assert os.pread(dst, 4, 4096) == b"data"
        finally:
            os.close(dst)
    finally:
        os.close(fd)
    sparse = where / "sparse"
    with open(sparse, "wb") as fh:
        fh.seek(1 << 20)
        fh.write(b"end")
    fd = os.open(sparse, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 1 << 20
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
    finally:
        os.close(fd)


def test_rename_over_existing_noreplace_and_exchange(where: Path) -> None:
    (where / "a").write_bytes(b"A")
    (where / "b").write_bytes(b"B")
    os.rename(where / "a", where / "b")
    assert not (where / "a").exists() and (where / "b").read_bytes() == b"A"
    (where / "c").write_bytes(b"C")
    with pytest.raises(OSError) as info:
        renameat2(where / "c", where / "b", RENAME_NOREPLACE)
    assert info.value.errno == errno.EEXIST
    renameat2(where / "c", where / "b", RENAME_EXCHANGE)
    assert (where / "b").read_bytes() == b"C" and (where / "c").read_bytes() == b"A"
    (where / "d1").mkdir()
    (where / "d1" / "inner").write_bytes(b"i")
    os.rename(where / "d1", where / "d2")
    assert (where / "d2" / "inner").read_bytes() == b"i"
    (where / "e").mkdir()
    (where / "e" / "x").write_bytes(b"")
    with pytest.raises(OSError) as info:
        os.rename(where / "d2", where / "e")
    assert info.value.errno in (errno.ENOTEMPTY, errno.EEXIST)


def test_hard_links(where: Path) -> None:
    (where / "orig").write_bytes(b"shared")
    os.link(where / "orig", where / "alias")
    assert (where / "orig").stat().st_nlink == 2
    with open(where / "alias", "ab") as fh:
        fh.write(b"!")
    assert (where / "orig").read_bytes() == b"shared!"
    assert (where / "orig").stat().st_ino == (where / "alias").stat().st_ino
    os.unlink(where / "orig")
    assert (where / "alias").stat().st_nlink == 1
    (where / "dir").mkdir()
    with pytest.raises(PermissionError):
        os.link(where / "dir", where / "dirlink")


def test_symlinks(where: Path) -> None:
    (where / "target").write_bytes(b"T")
    os.symlink("target", where / "rel")
    os.symlink("nowhere/at/all", where / "dangling")
    assert os.readlink(where / "rel") == "target"
    assert (where / "rel").read_bytes() == b"T"  # followed by the client, within the share
    assert stat.S_ISLNK(os.lstat(where / "dangling").st_mode)
    assert not (where / "dangling").exists()
    os.unlink(where / "rel")
    assert (where / "target").exists()
    os.mkfifo(where / "fifo")
    assert stat.S_ISFIFO(os.lstat(where / "fifo").st_mode)


def test_mkdir_rmdir_unlink(where: Path) -> None:
    (where / "d" / "e").mkdir(parents=True)
    (where / "d" / "e" / "f").write_bytes(b"")
    with pytest.raises(OSError) as info:
        os.rmdir(where / "d")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        os.unlink(where / "d")
    os.unlink(where / "d" / "e" / "f")
    os.rmdir(where / "d" / "e")
    os.rmdir(where / "d")
    assert os.listdir(where) == []
    with pytest.raises(FileNotFoundError):
        os.stat(where / "missing")


def test_readdir_of_10k_entries(where: Path) -> None:
    big = where / "big"
    big.mkdir()
    names = {f"entry-{i:05d}-{'x' * (i % 40)}" for i in range(10_000)}
    for name in names:
        os.close(os.open(big / name, os.O_CREAT | os.O_WRONLY, 0o644))
    assert set(os.listdir(big)) == names
    with os.scandir(big) as it:
        kinds = {entry.name: entry.is_file(follow_symlinks=False) for entry in it}
    assert len(kinds) == 10_000 and all(kinds.values())


@_needs_root
def test_chmod_chown_utimes(where: Path) -> None:
    f = where / "m"
    f.write_bytes(b"")
    os.chmod(f, 0o640)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    os.chmod(f, 0o4755)
    assert stat.S_IMODE(f.stat().st_mode) == 0o4755
    os.chown(f, 1234, 5678)
    assert (f.stat().st_uid, f.stat().st_gid) == (1234, 5678)
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    st = f.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    os.symlink("m", where / "lnk")
    os.utime(where / "lnk", ns=(3_000_000_000, 4_000_000_000), follow_symlinks=False)
    assert os.lstat(where / "lnk").st_mtime_ns == 4_000_000_000
    assert f.stat().st_mtime_ns == 2_000_000_456


def test_statfs(where: Path) -> None:
    sv = os.statvfs(where)
    assert sv.f_namemax == 255 and sv.f_frsize > 0 and sv.f_blocks > 0


def test_one_gib_sparse_file(where: Path) -> None:
    f = where / "huge"
    size = 1 << 30
    with open(f, "wb") as fh:
        fh.truncate(size)
        fh.seek(size - 4)
        fh.write(b"tail")
        fh.seek(size // 2)
        fh.write(b"middle")
    st = f.stat()
    assert st.st_size == size and st.st_blocks * 512 < 1 << 20
    with open(f, "rb") as fh:
        fh.seek(size - 4)
        assert fh.read() == b"tail"
        fh.seek(size // 2 - 2)
        assert fh.read(10) == b"\0\0middle\0\0"
        fh.seek(12345)
        assert fh.read(4096) == bytes(4096)


@_needs_root
def test_files_belong_to_their_creator(where: Path) -> None:
    """A non-root caller's new files, directories, symlinks and fifos are its own (the server creates as it).

    The caller is a thread with fsuid 12345 / fsgid 4321 (what the kernel reports to FUSE and uses locally)."""
    os.chmod(where, 0o777)
    dirfd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    errors: list[BaseException] = []

    def as_user() -> None:
        _libc.setfsgid(4321)
        _libc.setfsuid(12345)
        try:
            os.close(os.open("file", os.O_CREAT | os.O_WRONLY, 0o640, dir_fd=dirfd))
            os.mkdir("dir", 0o750, dir_fd=dirfd)
            os.symlink("file", "link", dir_fd=dirfd)
            os.mkfifo("fifo", dir_fd=dirfd)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            _libc.setfsuid(0)
            _libc.setfsgid(0)

    worker = threading.Thread(target=as_user)
    worker.start()
    worker.join(timeout=60)
    os.close(dirfd)
    assert not errors
    for name in ("file", "dir", "link", "fifo"):
        st = os.lstat(where / name)
        assert (st.st_uid, st.st_gid) == (12345, 4321), name


def test_parallel_clients_on_a_multithreaded_mount(layout, mount_share) -> None:
    """Four client threads at once, served by four server threads: every file comes back intact."""
    mount_share(threads=4)
    mnt = layout.mountpoint
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            d = mnt / f"c{k}"
            d.mkdir()
            for i in range(100):
                data = bytes([k, i]) * 2048
                (d / f"f{i}").write_bytes(data)
                assert (d / f"f{i}").read_bytes() == data
            fd = os.open(d / "f0", os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            assert len(os.listdir(d)) == 100
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors and not any(w.is_alive() for w in workers)
    assert sorted(os.listdir(layout.share)) == ["c0", "c1", "c2", "c3"]
