from __future__ import annotations

import shutil
import subprocess

import pytest

from _vmcore.initramfs import build_cpio, directory, file, minimal_initramfs


def test_header_layout_and_trailer():
    archive = build_cpio([directory("etc"), file("etc/hostname", b"vm\n", 0o644)])
    assert archive.startswith(b"070701")
    assert b"etc/hostname\0" in archive and archive.rstrip(b"\0").endswith(b"TRAILER!!!")
    assert len(archive) % 4 == 0


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_cpio_tool_reads_it(tmp_path):
    archive = minimal_initramfs(b"#!/bin/sh\necho hi\n")
    listing = subprocess.run(["cpio", "-itv"], input=archive, capture_output=True, check=True).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names == ["dev", "dev/console", "proc", "sys", "init"]
    assert listing.splitlines()[1].startswith("crw-------")
