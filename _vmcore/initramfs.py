"""Build the guest's initramfs at run time: an uncompressed newc cpio with our static agent as ``/init``.

The kernel unpacks it into rootfs; ``/dev/console`` is included so PID 1 starts with stdio on the console.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from _vmcore.errors import GuestImageError

AGENT_BINARY = Path(__file__).parent / "guest" / "bin" / "agent"
_MAGIC = b"070701"
_BASE_DIRS = ("dev", "proc", "sys", "tmp", "run", "mnt")


@dataclass(frozen=True)
class InitramfsFile:
    """A file to put in the image: ``data`` with ``mode`` (permission bits), or a symlink to ``link_target``."""

    data: bytes = b""
    mode: int = 0o644
    link_target: str | None = None


def agent_binary() -> bytes:
    """The static agent built by ``setup.py build_ext``."""
    try:
        return AGENT_BINARY.read_bytes()
    except FileNotFoundError:
        raise GuestImageError(
            f"guest agent not built: {AGENT_BINARY} is missing (run `python3 setup.py build_ext --inplace`)"
        ) from None


def _clean(path: str) -> str:
    if not isinstance(path, str) or "\0" in path:
        raise GuestImageError(f"bad initramfs path: {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise GuestImageError(f"initramfs path must name a file inside the image: {path!r}")
    return "/".join(parts)


class _CpioWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        raw = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self.ino += 1
        self.out += _MAGIC + b"".join(b"%08X" % f for f in fields) + raw
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def trailer(self) -> bytes:
        self.ino = 0
        self.entry("TRAILER!!!", 0)
        return bytes(self.out)


def build_initramfs(
    files: Mapping[str, bytes | InitramfsFile | Path] | None = None,
    *,
    agent: bytes | None = None,
) -> bytes:
    """The cpio image: base directories, ``/dev/console``, ``/init`` (the agent) and ``files`` (path -> content;
    parents are created). ``agent`` overrides the built binary (tests)."""
    entries: dict[str, InitramfsFile] = {}
    for path, content in (files or {}).items():
        name = _clean(path)
        if isinstance(content, Path):
            content = InitramfsFile(content.read_bytes(), stat.S_IMODE(content.stat().st_mode))
        elif isinstance(content, bytes | bytearray):
            content = InitramfsFile(bytes(content))
        elif not isinstance(content, InitramfsFile):
            raise GuestImageError(f"initramfs content for {path!r} must be bytes, a Path or InitramfsFile")
        if name == "init" or name.startswith("dev/console"):
            raise GuestImageError(f"{path!r} is reserved in the initramfs")
        entries[name] = content

    dirs = set(_BASE_DIRS)
    for name in entries:
        parent = posixpath.dirname(name)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    clash = dirs & entries.keys()
    if clash:
        raise GuestImageError(f"initramfs paths used both as file and directory: {sorted(clash)}")

    w = _CpioWriter()
    for d in sorted(dirs):  # sorted: parents before children
        w.entry(d, stat.S_IFDIR | 0o755, nlink=2)
    w.entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    w.entry("init", stat.S_IFREG | 0o755, agent if agent is not None else agent_binary())
    for name in sorted(entries):
        f = entries[name]
        if f.link_target is not None:
            w.entry(name, stat.S_IFLNK | 0o777, f.link_target.encode())
        else:
            w.entry(name, stat.S_IFREG | (f.mode & 0o7777), f.data)
    return w.trailer()


def write_initramfs(path: str | Path, files: Mapping[str, bytes | InitramfsFile | Path] | None = None) -> Path:
    """Write ``build_initramfs(files)`` to ``path`` atomically (temp file + rename)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(build_initramfs(files))
    tmp.replace(target)
    return target
