"""The sandbox's rows in the store, and the reaper that makes crashed sandboxes harmless.

A sandbox row is ``starting`` while the guest boots, ``running`` once the agent answered, ``stopped`` after a clean
stop and ``exited`` when its process was found dead (crashed, SIGKILLed, its creator killed). Mount rows (one per
named volume) carry the guest process's identity, so ``Volume.remove`` reaps those of dead guests by itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pytest_microsandbox.store import ProcessIdentity, SandboxRecord, Store

LIVE_STATES = ("starting", "running")


def run_dir(home: Path, name: str) -> Path:
    return home / "run" / name


def reap_sandboxes(store: Store, home: Path) -> list[str]:
    """Mark sandboxes whose process died ``exited``, drop their mount rows and runtime files; returns their names."""
    reaped = []
    for record in store.list_sandboxes():
        if record.status not in LIVE_STATES or _alive(record):
            continue
        store.detach_volumes(record.name)
        try:
            store.update_sandbox(record.name, status="exited")
        except Exception:  # removed concurrently: nothing left to mark
            pass
        shutil.rmtree(run_dir(home, record.name), ignore_errors=True)
        reaped.append(record.name)
    store.reap_dead_mounts()
    return reaped


def _alive(record: SandboxRecord) -> bool:
    if record.owner is not None:
        return record.owner.is_alive()
    creator = record.config.get("creator")  # still starting: its guest process is not known yet
    return bool(creator) and ProcessIdentity(*creator).is_alive()
