"""The asynchronous volume API, as the seeds write it (``await Volume.create(...)``).

Every call runs the synchronous implementation in a worker thread (``_async_face``): one implementation, two faces.
"""

from __future__ import annotations

from pytest_microsandbox._async_face import AsyncFace, awaited, awaited_constructor, awaited_static, delegated
from pytest_microsandbox.volumes import _fs, _volume


class VolumeFs(AsyncFace):
    """Host-side file access to a volume, no VM needed (async face of ``pytest_microsandbox.sync.VolumeFs``)."""

    read = awaited(_fs.VolumeFs.read)
    read_text = awaited(_fs.VolumeFs.read_text)
    write = awaited(_fs.VolumeFs.write)
    list = awaited(_fs.VolumeFs.list)
    mkdir = awaited(_fs.VolumeFs.mkdir)
    remove_file = awaited(_fs.VolumeFs.remove_file)
    remove_dir = awaited(_fs.VolumeFs.remove_dir)
    copy = awaited(_fs.VolumeFs.copy)
    rename = awaited(_fs.VolumeFs.rename)
    stat = awaited(_fs.VolumeFs.stat)
    exists = awaited(_fs.VolumeFs.exists)


class VolumeHandle(AsyncFace):
    """A recorded volume: its metadata, files and removal (async face of ``pytest_microsandbox.sync.VolumeHandle``)."""

    name = delegated(_volume.VolumeHandle.name)
    kind = delegated(_volume.VolumeHandle.kind)
    quota_mib = delegated(_volume.VolumeHandle.quota_mib)
    size_mib = delegated(_volume.VolumeHandle.size_mib)
    labels = delegated(_volume.VolumeHandle.labels)
    created_at = delegated(_volume.VolumeHandle.created_at)
    path = delegated(_volume.VolumeHandle.path)
    disk_image = delegated(_volume.VolumeHandle.disk_image)
    used_bytes = delegated(_volume.VolumeHandle.used_bytes)
    fs = delegated(_volume.VolumeHandle.fs, returns=VolumeFs)
    mount = delegated(_volume.VolumeHandle.mount)
    remove = awaited(_volume.VolumeHandle.remove)


class Volume(AsyncFace):
    """A named volume just created, and the static entry points of the async volume API."""

    name = delegated(_volume.Volume.name)
    path = delegated(_volume.Volume.path)
    fs = delegated(_volume.Volume.fs, returns=VolumeFs)
    handle = delegated(_volume.Volume.handle, returns=VolumeHandle)

    create = awaited_constructor(_volume.Volume.create)
    get = awaited_static(_volume.Volume.get, returns=VolumeHandle)
    list = awaited_static(_volume.Volume.list, returns=lambda handles: [VolumeHandle(h) for h in handles])
    remove = awaited_static(_volume.Volume.remove)
    for_mount = awaited_static(_volume.Volume.for_mount, returns=VolumeHandle)

    bind = staticmethod(_volume.Volume.bind)
    named = staticmethod(_volume.Volume.named)
    tmpfs = staticmethod(_volume.Volume.tmpfs)
    disk = staticmethod(_volume.Volume.disk)
