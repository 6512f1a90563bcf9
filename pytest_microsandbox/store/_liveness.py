"""Is the process that owns a record still alive? A pid alone can be reused, so records keep its start time too."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pytest_microsandbox._proc import process_start_ticks


@dataclass(frozen=True)
class ProcessIdentity:
    """A process, named so that a reused pid is never mistaken for it: its pid, its start time (clock ticks since
    boot) and the machine (``HostIdentity``) where that pid means something."""

    pid: int
    start_ticks: int
    machine: str = ""  # ``str(HostIdentity)`` where the pid means something; "" in records older than the field: here

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process (read from /proc once per process: a forked child has a pid, and a start time, of its own)."""
        global _current
        me = _current
        if me is None or me.pid != os.getpid():
            me = _current = cls.of(os.getpid())
        return me

    @classmethod
    def of(cls, pid: int, start_ticks: int | None = None) -> ProcessIdentity:
        """``pid`` as it is now; ``start_ticks`` when known already (read by its parent before it could be reaped:
        its pid may name another process by now)."""
        ticks = process_start_ticks(pid) if start_ticks is None else start_ticks
        if ticks is None:
            raise ProcessLookupError(pid)
        return cls(pid, ticks, str(HostIdentity.current()))

    def is_here(self) -> bool:
        """True if ``pid`` names a process of this machine (so it may be signalled), alive or not."""
        if not self.machine:
            return True
        there = HostIdentity.parse(self.machine)
        return there is not None and HostIdentity.current().owns_pids_of(there)

    def is_alive(self) -> bool:
        """False only when the process certainly ended. One on a machine whose pids we cannot see (another host or
        container sharing this home) counts as alive, unless that machine is this host before its last reboot."""
        if self.machine:
            here, there = HostIdentity.current(), HostIdentity.parse(self.machine)
            if there is None:
                return True  # an unreadable record is never taken for a dead one
            if not here.owns_pids_of(there):
                return not here.outlived(there)
        ticks = process_start_ticks(self.pid)
        if ticks is None or ticks != self.start_ticks:
            return False
        try:  # a zombie still has /proc/PID/stat but will never run again
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in (b"Z", b"X")


_current: ProcessIdentity | None = None


@dataclass(frozen=True)
class HostIdentity:
    """Where a pid means something: a host name, a boot, and a pid namespace.

    A home can be shared with another machine (an NFS home, a VM or container with the home mounted in): there, a
    pid says nothing, and a process we cannot see may well be alive. Only a record made under our own boot and pid
    namespace can be judged by its pid, and one made by an earlier boot of this same host is certainly dead.
    """

    hostname: str
    boot_id: str
    pid_namespace: str

    @classmethod
    def current(cls) -> HostIdentity:
        """This machine, read once per process (a child forked into a new pid namespace reads its own)."""
        global _machine
        pid = os.getpid()
        if _machine is None or _machine[0] != pid:
            _machine = (pid, cls(os.uname().nodename, _boot_id(), _pid_namespace()))
        return _machine[1]

    def __str__(self) -> str:
        return f"{self.hostname}/{self.boot_id}/{self.pid_namespace}"

    @classmethod
    def parse(cls, text: str) -> HostIdentity | None:
        """The identity ``str()`` wrote, or None for anything else."""
        parts = text.rsplit("/", 2)
        return cls(*parts) if len(parts) == 3 and all(parts) else None

    def owns_pids_of(self, other: HostIdentity) -> bool:
        """True if a pid recorded on ``other`` names a process of this machine (alive or not)."""
        return self.boot_id == other.boot_id and self.pid_namespace == other.pid_namespace

    def outlived(self, other: HostIdentity) -> bool:
        """True if every process of ``other`` is certainly dead: it is this host before its last reboot."""
        return self.hostname == other.hostname and self.boot_id != other.boot_id


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "unknown"


_machine: tuple[int, HostIdentity] | None = None
