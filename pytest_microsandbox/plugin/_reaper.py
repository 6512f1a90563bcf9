"""Leftovers of runs that died (SIGKILL, power loss): found by owner labels, removed only if that owner is dead."""

from __future__ import annotations

from pathlib import Path

from pytest_microsandbox.errors import VolumeInUseError, VolumeNotFoundError
from pytest_microsandbox.plugin._run import LABEL_FIXTURE, owner_is_dead
from pytest_microsandbox.sync import Volume


def sweep_leftover_volumes(home: Path) -> list[str]:
    """Remove fixture-made volumes whose owning process is dead; never touch a live run's, one made on another
    machine sharing this home, nor a user's own."""
    removed = []
    for handle in Volume.list(home=home):
        labels = handle.labels
        if LABEL_FIXTURE not in labels:
            continue  # not ours: a volume the user made
        if not owner_is_dead(labels):
            continue  # alive, or on a machine sharing this home whose processes we cannot see
        try:
            handle.remove()
        except (VolumeInUseError, VolumeNotFoundError):
            continue  # a live sandbox still mounts it, or another sweeper got there first
        removed.append(handle.name)
    return removed
