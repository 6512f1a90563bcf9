"""A newc cpio archive (the initramfs format) built in memory: files, directories, symlinks and device nodes,
owned by root, without needing root or a cpio binary on the host."""

from __future__ import annotations

import stat
from dataclasses import dataclass

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, no leading slash
    mode: int  # full st_mode: S_IFREG | 0o755, S_IFDIR | 0o755, S_IFCHR | 0o600, ...
    data: bytes = b""  # file contents or symlink target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes


def file(path: str, data: bytes, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode)


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def build_cpio(entries: list[Entry]) -> bytes:
    """The archive, parents listed before children as the kernel's unpacker needs."""
    out = bytearray()
    for ino, e in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        name = e.path.lstrip("/").encode() + b"\0"
        fields = (ino, e.mode, 0, 0, 1 if e.path != TRAILER else 0, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1],
                  len(name), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields)
        out += name + _pad4(110 + len(name))
        out += e.data + _pad4(len(e.data))
    return bytes(out)


def minimal_initramfs(init: bytes) -> bytes:
    """/init plus /dev/console, /proc, /sys: enough for a static init to talk on the console."""
    return build_cpio([directory("dev"), char_device("dev/console", 5, 1), directory("proc"), directory("sys"),
                       file("init", init)])
