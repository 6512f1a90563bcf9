"""Is the process that owns a record still alive? A pid alone can be reused, so records keep its start time too."""

from __future__ import annotations

import os
from dataclasses import dataclass


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process (read from /proc once per process: a forked child has a pid, and a start time, of its own)."""
        global _current
        me = _current
        if me is None or me.pid != os.getpid():
            me = _current = cls.of(os.getpid())
        return me

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        ticks = process_start_ticks(pid)
        if ticks is None:
            raise ProcessLookupError(pid)
        return cls(pid, ticks)

    def is_alive(self) -> bool:
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
