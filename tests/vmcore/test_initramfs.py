"""The initramfs builder: a newc cpio the kernel (and busybox cpio, checked here) can unpack."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from _vmcore.errors import GuestImageError
from _vmcore.initramfs import InitramfsFile, agent_binary, build_initramfs, write_initramfs


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, rdev), checking magic, alignment and the trailer."""
    out, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, body, (rmaj, rmin))


def test_layout() -> None:
    image = build_initramfs(
        {
            "etc/hostname": b"guest\n",
            "bin/tool": InitramfsFile(b"#!x", 0o755),
            "bin/sh": InitramfsFile(link_target="tool"),
        }
    )
    entries = parse_newc(image)
    assert entries["init"][1] == agent_binary() and entries["init"][0] == stat.S_IFREG | 0o755
    assert entries["dev/console"][0] == stat.S_IFCHR | 0o600 and entries["dev/console"][2] == (5, 1)
    for d in ("dev", "proc", "sys", "tmp", "etc", "bin"):
        assert stat.S_ISDIR(entries[d][0])
    assert entries["etc/hostname"] == (stat.S_IFREG | 0o644, b"guest\n", (0, 0))
    assert entries["bin/tool"][0] == stat.S_IFREG | 0o755
    assert entries["bin/sh"][0] == stat.S_IFLNK | 0o777 and entries["bin/sh"][1] == b"tool"
    names = list(entries)
    assert names.index("etc") < names.index("etc/hostname")


def test_host_file_keeps_its_mode(tmp_path) -> None:
    src = tmp_path / "script"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o750)
    assert parse_newc(build_initramfs({"/usr/bin/script": src}))["usr/bin/script"][0] == stat.S_IFREG | 0o750


@pytest.mark.parametrize("bad", ["", "/", "..", "../etc/x", "a/../../b", "init", "/init", "dev/console", "a\0b"])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(GuestImageError):
        build_initramfs({bad: b"x"})


def test_file_and_directory_clash() -> None:
    with pytest.raises(GuestImageError):
        build_initramfs({"a": b"x", "a/b": b"y"})


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox (Debian busybox-static) is not installed")
def test_busybox_cpio_unpacks_it(tmp_path) -> None:
    image = write_initramfs(tmp_path / "initrd.cpio", {"etc/motd": b"hi\n", "bin/x": InitramfsFile(b"y", 0o700)})
    listing = subprocess.run(["busybox", "cpio", "-t"], input=image.read_bytes(), capture_output=True, check=True)
    names = set(listing.stdout.decode().split())
    assert {"init", "dev/console", "etc/motd", "bin/x", "proc", "tmp"} <= names
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=image.read_bytes(), cwd=out, check=True, capture_output=True)
    assert (out / "etc" / "motd").read_bytes() == b"hi\n"
    assert (out / "init").read_bytes() == agent_binary()
    assert stat.S_IMODE((out / "bin" / "x").stat().st_mode) == 0o700
