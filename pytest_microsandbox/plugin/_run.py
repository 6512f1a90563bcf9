"""Who this pytest process is: the run (shared by all xdist workers), the worker, and the names we give things."""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_microsandbox.store import HostIdentity, ProcessIdentity

# Labels on every volume a fixture creates: they let a later run tell our leftovers from anything else.
LABEL_RUN = "msb.run"
LABEL_WORKER = "msb.worker"
LABEL_OWNER = "msb.owner"  # "PID:START_TICKS" of the process whose death makes the volume a leftover
LABEL_MACHINE = "msb.machine"  # "HOSTNAME/BOOT_ID/PIDNS" where that pid means something (see ``HostIdentity``)
LABEL_FIXTURE = "msb.fixture"


@dataclass
class RunContext:
    run_id: str
    worker: str
    controller: ProcessIdentity
    home: Path
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    @classmethod
    def for_config(cls, config: pytest.Config, home: Path) -> RunContext:
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None and "msb_run_id" in workerinput:
            controller = ProcessIdentity(*workerinput["msb_controller"])
            return cls(workerinput["msb_run_id"], workerinput["workerid"], controller, home)
        return cls(new_run_id(), "main", ProcessIdentity.current(), home)

    @property
    def is_controller(self) -> bool:
        return self.worker == "main"

    def next_name(self, kind: str = "") -> str:
        """``msb-<run>-<worker>-<n>``: unique in this run, and telling whose it is."""
        prefix = f"msb-{self.run_id}-{self.worker}-"
        return f"{prefix}{kind}{'-' if kind else ''}{next(self._counter)}"

    @property
    def shared_volume_name(self) -> str:
        return f"msb-{self.run_id}-shared"

    def labels(self, fixture: str, owner: ProcessIdentity | None = None) -> dict[str, str]:
        owner = owner or ProcessIdentity.current()
        return {
            LABEL_RUN: self.run_id,
            LABEL_WORKER: self.worker,
            LABEL_OWNER: f"{owner.pid}:{owner.start_ticks}",
            LABEL_MACHINE: owner.machine or str(HostIdentity.current()),
            LABEL_FIXTURE: fixture,
        }


def new_run_id() -> str:
    return secrets.token_hex(4)


def owner_from_labels(labels: dict[str, str]) -> ProcessIdentity | None:
    pid, sep, start = labels.get(LABEL_OWNER, "").partition(":")
    if not sep or not pid.isdigit() or not start.isdigit():
        return None
    return ProcessIdentity(int(pid), int(start), labels.get(LABEL_MACHINE, ""))


def owner_is_dead(labels: dict[str, str]) -> bool:
    """True only when the labelled owner certainly died; a malformed label, or an owner on a machine whose pids we
    cannot see (another host or container sharing this home), is never judged dead."""
    owner = owner_from_labels(labels)
    return owner is not None and not owner.is_alive()


def current_pid() -> int:
    return os.getpid()
