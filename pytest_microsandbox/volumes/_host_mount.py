"""A directory volume served on a host mount point by our FUSE server (``msb volume mount``), recorded like a
sandbox that mounts it, so the volume is not removed while it is served."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pytest_microsandbox.errors import InvalidConfigError, VolumeError
from pytest_microsandbox.store import ProcessIdentity, SandboxRecord, Store
from pytest_microsandbox.volumes._volume import Volume, VolumeHandle


@contextlib.contextmanager
def mount_on_host(name: str, mountpoint: str | os.PathLike[str], *, home: Path, readonly: bool = False,
                  allow_other: bool = False) -> Iterator[VolumeHandle]:
    """Serve the directory volume ``name`` at ``mountpoint`` until the block ends (quota and read-only enforced by
    our FUSE server). Raises VolumeError where this host cannot mount FUSE."""
    from _vmcore.fs.mount import FuseMount, FuseUnavailableError

    handle = Volume.get(name, home=home)
    if handle.kind != "dir":
        raise InvalidConfigError(f"volume {handle.name} is a disk volume: mount its image inside a sandbox instead")
    store, me = Store(home), ProcessIdentity.current()
    holder = f"msb-volume-mount-{me.pid}"  # recorded like a sandbox, so `msb volume rm` refuses while it is served
    store.add_sandbox(SandboxRecord(name=holder, backend="fuse", owner=me, status="running"))
    try:
        store.attach_volume(holder, handle.name, os.fspath(mountpoint), readonly, me)
        try:
            mount = FuseMount(handle.path, mountpoint, readonly=readonly, allow_other=allow_other,
                              quota_mib=handle.quota_mib)
            mount.start()
        except FuseUnavailableError as err:
            raise VolumeError(f"cannot mount {handle.name}: {err}") from None
        with contextlib.closing(mount):
            yield handle
    finally:
        store.remove_sandbox(holder)
