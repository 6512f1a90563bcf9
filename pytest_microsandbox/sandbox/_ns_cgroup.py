"""Resource limits for namespace sandboxes: each in a cgroup v2 of its own, with ``memory.max`` from
``memory_mib``, ``cpu.max`` from ``cpus`` and ``pids.max`` (``PIDS_MAX``), where the host lets us make one.

Where: beside our own cgroup (under its parent, in ``msb-sandboxes/``), or under it when we are in the root
cgroup. A cgroup holding processes cannot hand controllers to children (cgroup v2's "no internal processes"
rule), so our own is not the place unless it is the root. Making and filling the parent's child needs write
access there: root has it, and so does a user whose session systemd delegates (``user@.service``). The
launcher moves itself in before it execs anything (``cgroup.procs``), so every process of the sandbox starts
inside; the cgroup is removed once the sandbox has ended (and empty leftovers of killed runs on the next start).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
PIDS_MAX = 1024  # processes and threads of one sandbox: enough for builds and test runners, not a fork bomb
CPU_PERIOD_US = 100_000
GROUP = "msb-sandboxes"
SWEEP_AFTER_S = 60


@dataclass(frozen=True)
class Placement:
    """Where sandbox cgroups go, or why they cannot: ``parent`` None and ``reason`` set."""

    parent: Path | None
    reason: str = ""


@functools.lru_cache(maxsize=1)
def placement() -> Placement:
    """Find (and prepare) the cgroup that holds every sandbox's cgroup of this process (once a process)."""
    if not (CGROUP_ROOT / "cgroup.controllers").is_file():
        return Placement(None, "the host has no cgroup v2 hierarchy at /sys/fs/cgroup (cgroup v1 or none)")
    ours = _own_cgroup()
    if ours is None:
        return Placement(None, "this process is not in a cgroup v2 (a hybrid hierarchy?)")
    base = CGROUP_ROOT / ours.lstrip("/")
    if ours != "/":
        base = base.parent
    missing = set(CONTROLLERS) - set(_read(base / "cgroup.controllers").split())
    if missing:
        return Placement(None, f"the {', '.join(sorted(missing))} controller(s) are not delegated to {base}")
    group = base / GROUP
    try:
        _enable(base)
        group.mkdir(exist_ok=True)
        _enable(group)
    except OSError as e:
        return Placement(None, f"cannot make sandbox cgroups under {base}: {e.strerror or e}")
    return Placement(group)


def _own_cgroup() -> str | None:
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _enable(cgroup: Path) -> None:
    have = set(_read(cgroup / "cgroup.subtree_control").split())
    wanted = [c for c in CONTROLLERS if c not in have]
    if wanted:
        (cgroup / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


@dataclass
class SandboxCgroup:
    path: Path

    def prefix(self) -> list[str]:
        """Argv that moves the launcher in, then execs the rest."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path)]

    def remove(self) -> None:
        """Once the sandbox has ended: its cgroup goes (it is empty then)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def sandbox_cgroup(parent: Path, name: str, memory_mib: int, cpus: int) -> SandboxCgroup:
    """A new cgroup for sandbox ``name`` with its limits written."""
    _sweep(parent)
    path = parent / f"{name}-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        (path / "memory.max").write_text(str(memory_mib << 20))
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")  # the limit is memory, not memory and then swap
        (path / "pids.max").write_text(str(PIDS_MAX))
        (path / "cpu.max").write_text(f"{cpus * CPU_PERIOD_US} {CPU_PERIOD_US}")
    except BaseException:
        path.rmdir()
        raise
    return SandboxCgroup(path)


def _sweep(parent: Path) -> None:
    """Empty cgroups of sandboxes whose creator was killed: removing a cgroup with processes fails (EBUSY), and
    one made in the last minute may be another creator's, about to be entered."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and now - entry.stat().st_mtime > SWEEP_AFTER_S:
                    os.rmdir(entry.path)
