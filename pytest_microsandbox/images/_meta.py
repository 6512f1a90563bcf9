"""Ownership, modes, device numbers and xattrs of an unpacked root, kept beside it rather than applied to host
files (we never create root-owned or setuid files on the host); the disk builder writes them into the image."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EntryMeta:
    uid: int
    gid: int
    mode: int  # full st_mode: type bits and permission bits, setuid/setgid/sticky included
    rdev: tuple[int, int] | None = None  # (major, minor) for device nodes
    xattrs: dict[str, bytes] = field(default_factory=dict)


class RootMeta:
    """Path (``/usr/bin/su``, as seen inside the image) -> EntryMeta."""

    def __init__(self) -> None:
        self.entries: dict[str, EntryMeta] = {}

    def set(self, path: str, meta: EntryMeta) -> None:
        self.entries[path] = meta

    def get(self, path: str) -> EntryMeta | None:
        return self.entries.get(path)

    def remove_tree(self, path: str) -> None:
        """Forget ``path`` and everything below it."""
        self.entries.pop(path, None)
        prefix = path.rstrip("/") + "/"
        for key in [k for k in self.entries if k.startswith(prefix)]:
            del self.entries[key]

    def save(self, dest: Path) -> None:
        doc = {path: [m.uid, m.gid, m.mode, list(m.rdev) if m.rdev else None,
                      {k: base64.b64encode(v).decode() for k, v in m.xattrs.items()}]
               for path, m in sorted(self.entries.items())}
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.rename(tmp, dest)

    @classmethod
    def load(cls, src: Path) -> RootMeta:
        meta = cls()
        for path, (uid, gid, mode, rdev, xattrs) in json.loads(src.read_text()).items():
            meta.entries[path] = EntryMeta(uid, gid, mode, tuple(rdev) if rdev else None,
                                           {k: base64.b64decode(v) for k, v in xattrs.items()})
        return meta
