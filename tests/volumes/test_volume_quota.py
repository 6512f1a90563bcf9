"""A volume's quota is one account: host-side ``VolumeFs`` writes and every server of the volume charge it."""

from __future__ import annotations

from pathlib import Path

import pytest

from _vmcore.fs import FuseServer
from pytest_microsandbox.errors import QuotaExceededError
from pytest_microsandbox.sync import Volume

MIB = 1 << 20


def test_host_side_writes_are_charged_and_refused_past_the_quota_leaving_nothing(home: Path) -> None:
    fs = Volume.create("q", quota_mib=1, home=home).fs
    fs.write("a/b/first.bin", b"x" * (600 << 10))
    with pytest.raises(QuotaExceededError) as info:
        fs.write("a/second.bin", b"y" * (600 << 10))
    assert info.value.errno == 28 and "1 MiB" in str(info.value)
    assert not fs.exists("a/second.bin")                  # refused before anything was made
    with pytest.raises(QuotaExceededError):
        fs.copy("a/b/first.bin", "copy.bin")
    assert not fs.exists("copy.bin")
    fs.write("a/b/first.bin", b"z" * (700 << 10))        # replacing gives the old blocks back first
    fs.remove_dir("a")
    fs.write("again.bin", b"w" * (900 << 10))             # everything removed was given back


def test_a_running_server_and_host_writes_share_the_account(home: Path) -> None:
    volume = Volume.create("shared", quota_mib=1, home=home)
    server = FuseServer(volume.path, quota_mib=1)
    try:
        before = server.used_bytes
        volume.fs.write("from-host.bin", b"h" * (512 << 10))
        assert server.used_bytes >= before + (512 << 10)  # the server sees the host's write at once
        with pytest.raises(QuotaExceededError):
            volume.fs.write("more.bin", b"m" * (512 << 10))
        volume.fs.remove_file("from-host.bin")
        assert server.used_bytes == before
    finally:
        server.close()


def test_many_small_inodes_are_not_free(home: Path) -> None:
    fs = Volume.create("tiny", quota_mib=1, home=home).fs
    with pytest.raises(QuotaExceededError):
        for i in range(10_000):
            fs.mkdir(f"d{i}")
    assert len(fs.list()) < 300  # a directory costs a block and an inode
