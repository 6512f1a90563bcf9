"""Where the FUSE tests put the share, the sentinels outside it and the mount point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Layout:
    """``share`` is served; ``outside/sentinel`` is what the server would reach by following ``../outside`` on
    the host; the mount sits one level deeper, so the client's own ``../outside`` is the ``decoy`` instead."""

    share: Path
    outside: Path
    sentinel: Path
    mountpoint: Path
    decoy: Path

    def outside_state(self) -> dict[str, tuple[int, int, bytes]]:
        state = {}
        for path in sorted(self.outside.rglob("*")):
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            state[str(path)] = (st.st_mode, st.st_mtime_ns, data)
        return state
