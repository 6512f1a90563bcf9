"""Builds guest root filesystems for boot tests: a static C program as /init, packed by ``mke2fs -d``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        pytest.fail(f"{name} is needed (see .ci/apt.d/)")
    return found


def build_root_image(workdir: Path, init_source: str, size: str = "16M") -> Path:
    """An ext4 image holding /init (compiled from ``init_source``) and empty /dev, /proc, /sys."""
    root = workdir / "root"
    for sub in ("dev", "proc", "sys"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    src = workdir / "init.c"
    src.write_text(init_source)
    subprocess.run([tool("cc"), "-static", "-O2", "-o", str(root / "init"), str(src)], check=True)
    image = workdir / "root.ext4"
    subprocess.run([tool("mke2fs"), "-q", "-t", "ext4", "-d", str(root), "-L", "root", str(image), size],
                   check=True, capture_output=True)
    return image
