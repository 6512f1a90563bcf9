"""The interface both isolation backends implement: start one guest process, hand back its agent connection.

A backend turns a ``GuestPlan`` (root, mounts, env, ...) into a running ``Guest``: one host process (the namespace
launcher or the VMM) whose death ends the sandbox, and a connected socket to the agent inside it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from pytest_microsandbox.agent import BootConfig
from pytest_microsandbox.sandbox._config import SandboxConfig

if TYPE_CHECKING:
    from pytest_microsandbox.sandbox._plan import ResolvedImage

T = TypeVar("T")

# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so every guest process is started from this
# one long-lived thread: the guests die with the process that created them, not with a short-lived worker thread.
# A forked child (multiprocessing) inherits the executor but not its thread: each process makes its own.
_spawner: tuple[int, ThreadPoolExecutor] | None = None
_spawner_lock = threading.Lock()


def _new_spawner_lock() -> None:
    global _spawner_lock
    _spawner_lock = threading.Lock()  # one another thread held at the fork would stay held in the child


os.register_at_fork(after_in_child=_new_spawner_lock)


def on_spawner_thread(fn: Callable[[], T]) -> T:
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():
            _spawner = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="msb-spawner"))
        executor = _spawner[1]
    return executor.submit(fn).result()


@dataclass(frozen=True)
class DiskAttachment:
    """A disk image the backend attaches (namespace: a read-only loop mount; vm: a virtio-blk device)."""

    image: str
    guest_path: str
    fstype: str | None
    readonly: bool
    noexec: bool
    nosuid: bool
    nodev: bool
    format: str = "raw"  # raw, qcow2 or vmdk (the vm backend reads all three)


@dataclass(frozen=True)
class GuestPlan:
    """Everything a backend needs, resolved once (``_plan.build_plan``): host paths only, no volume names. A
    backend never changes it: what it adds (its own boot config) comes back in the ``Guest``."""

    config: SandboxConfig
    run_dir: Path  # <home>/run/<name>: console log, disk mount points, sockets
    boot: BootConfig  # as the guest sees it before a backend translates its mounts
    disks: list[DiskAttachment] = field(default_factory=list)
    quotas: dict[str, int] = field(default_factory=dict)  # guest path -> MiB, for binds (vm: our virtio-fs server)
    home: Path | None = None  # the state directory (image cache, snapshot templates)
    image: ResolvedImage | None = None  # None only in plans made by hand (tests)


ENTROPY_BYTES = 64


class GuestProcess(Protocol):
    """The host process whose death ends a sandbox."""

    pid: int
    start_ticks: int | None  # its start time when read before it could be reaped (else None: read it now)

    def ended(self, timeout: float | None = 0) -> bool: ...  # waits up to timeout (None: until it has)

    def kill(self) -> None: ...  # SIGKILL, if it still runs


class ChildProcess:
    """A guest process we started ourselves (the namespace launcher)."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.start_ticks = None  # our own child: a zombie until we wait, so its pid names it until then

    def ended(self, timeout: float | None = 0) -> bool:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass


class Guest:
    """A started guest: its host process and the host end of the agent connection. ``announces``: the agent's
    first frame is its unasked announcement, and what the host sends before it may be lost (a VM's agent port
    discards input until the agent opens it), so the client waits for it instead of asking HELLO. ``closers``
    release what this process serves the guest (FUSE connections) once it has ended: ``release()``."""

    def __init__(self, process: GuestProcess | subprocess.Popen, sock: socket.socket, console_log: Path,
                 boot: BootConfig, *, announces: bool = False, fresh_identity: bool = False,
                 closers: list[Callable[[], None]] | None = None) -> None:
        self.process = ChildProcess(process) if isinstance(process, subprocess.Popen) else process
        self.sock = sock
        self.console_log = console_log
        self.boot = boot  # the plan's, with the mounts as this backend carries them
        self.announces = announces
        self.fresh_identity = fresh_identity  # a VM guest (maybe a snapshot clone): see ``boot_config``
        self._closers = list(closers or [])
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def boot_config(self) -> BootConfig:
        """The BOOT to send now: a VM guest also gets fresh host entropy and the host's clock as of this moment (a
        snapshot clone would otherwise share its template's random state and wake with its template's time)."""
        if not self.fresh_identity:
            return self.boot
        return replace(self.boot, entropy=os.urandom(ENTROPY_BYTES), realtime_ns=time.time_ns())

    def alive(self) -> bool:
        return not self.process.ended(0)

    def wait(self, timeout: float | None) -> bool:
        """Whether the guest process has ended, waiting up to ``timeout`` seconds for it."""
        return self.process.ended(timeout)

    def kill(self) -> None:
        with self._lock:
            self.process.kill()
            self.process.ended(None)
        self.release()

    def release(self) -> None:
        """Close the agent connection and what this process serves the guest. Idempotent."""
        self.sock.close()
        with self._lock:
            closers, self._closers = self._closers, []
        for close in closers:
            close()

    def console_tail(self, lines: int = 40) -> str:
        return tail_file(self.console_log, lines)


def tail_file(path: Path, lines: int = 40, max_bytes: int = 64 << 10) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class Backend(Protocol):
    name: str
    description: str  # what `msb ps` shows about its isolation

    def start(self, plan: GuestPlan) -> Guest: ...
