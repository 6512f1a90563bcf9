"""Leftovers of runs that died (SIGKILL, power loss): found by owner labels, removed only if that owner is dead."""

from __future__ import annotations

from pathlib import Path

from pytest_microsandbox._run import LABEL_FIXTURE, owner_from_labels
from pytest_microsandbox.errors import VolumeInUseError, VolumeNotFoundError
from pytest_microsandbox.volumes._sync import Volume


def sweep_leftover_volumes(home: Path) -> list[str]:
    """Remove fixture-made volumes whose owning process is dead; never touch a live run's (nor a user's own)."""
    removed = []
    for handle in Volume.list(home=home):
        labels = handle.labels
        if LABEL_FIXTURE not in labels:
            continue  # not ours: a volume the user made
        owner = owner_from_labels(labels)
        if owner is None or owner.is_alive():
            continue
        try:
            handle.remove()
        except (VolumeInUseError, VolumeNotFoundError):
            continue  # a live sandbox still mounts it, or another sweeper got there first
        removed.append(handle.name)
    return removed
