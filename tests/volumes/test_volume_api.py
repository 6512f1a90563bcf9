"""The volume API as the seeds use it (async) and its sync twin: one implementation behind both."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pytest_microsandbox as msb
from pytest_microsandbox import sync
from pytest_microsandbox.errors import (
    InvalidConfigError,
    VolumeAlreadyExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
)
from pytest_microsandbox.store import ProcessIdentity, SandboxRecord, Store


def test_async_create_get_list_remove(home: Path) -> None:
    async def scenario() -> None:
        vol = await msb.Volume.create("pip-cache", quota_mib=1024, labels={"team": "ci"})
        assert vol.name == "pip-cache" and vol.path == home / "volumes" / "pip-cache"
        await vol.fs.write("wheels/a.whl", b"x" * 10000)
        handle = await msb.Volume.get("pip-cache")
        assert handle.name == "pip-cache"
        assert handle.kind == msb.VolumeKind.DIRECTORY == "dir"
        assert handle.quota_mib == 1024 and handle.labels == {"team": "ci"}
        assert handle.used_bytes >= 10000
        assert abs(handle.created_at - time.time() * 1000) < 60_000
        assert await handle.fs.read("wheels/a.whl") == b"x" * 10000
        assert [h.name for h in await msb.Volume.list()] == ["pip-cache"]
        await handle.remove()
        assert await msb.Volume.list() == []
        with pytest.raises(VolumeNotFoundError, match="volume not found: pip-cache"):
            await msb.Volume.get("pip-cache")

    asyncio.run(scenario())
    assert not (home / "volumes" / "pip-cache").exists()


def test_sync_api_mirrors_async(home: Path) -> None:
    vol = sync.Volume.create("data")
    vol.fs.write("x.txt", b"1")
    assert sync.Volume.get("data").fs.read_text("x.txt") == "1"
    with pytest.raises(VolumeAlreadyExistsError, match="volume already exists: data"):
        sync.Volume.create("data")
    sync.Volume.remove("data")
    with pytest.raises(VolumeNotFoundError):
        sync.Volume.remove("data")


def test_explicit_home_overrides_env(tmp_path: Path, home: Path) -> None:
    other = tmp_path / "elsewhere"
    sync.Volume.create("v", home=other)
    assert (other / "volumes" / "v").is_dir() and sync.Volume.list() == []
    assert [h.name for h in sync.Volume.list(home=other)] == ["v"]


def test_disk_volume_is_an_ext4_image(home: Path) -> None:
    vol = sync.Volume.create("disk1", kind="disk", size_mib=16)
    handle = vol.handle
    image = handle.disk_image
    assert image is not None and image.stat().st_size == 16 << 20
    with open(image, "rb") as f:
        f.seek(1024 + 0x38)
        assert f.read(2) == b"\x53\xef"  # ext2/3/4 superblock magic
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    assert "has_journal" in out and "extent" in out  # ext4 features
    assert handle.size_mib == 16 and handle.quota_mib is None and handle.used_bytes > 0
    with pytest.raises(InvalidConfigError, match="disk volume"):
        handle.fs  # noqa: B018


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": ""}, "must not be empty"),
        ({"name": "-dash"}, "invalid volume name"),
        ({"name": ".hidden"}, "invalid volume name"),
        ({"name": "a/b"}, "invalid volume name"),
        ({"name": "a" * 129}, "longer than 128"),
        ({"name": "ünïcode"}, "invalid volume name"),
        ({"name": "v", "kind": "tape"}, "unknown volume kind"),
        ({"name": "v", "kind": "disk"}, "needs size_mib"),
        ({"name": "v", "kind": "disk", "size_mib": 8, "quota_mib": 4}, "quota_mib applies"),
        ({"name": "v", "size_mib": 8}, "size_mib applies to disk"),
        ({"name": "v", "quota_mib": 0}, "must be positive"),
        ({"name": "v", "quota_mib": True}, "whole number"),
        ({"name": "v", "labels": {"k": 1}}, "labels must be"),
    ],
)
def test_bad_input_is_refused_and_leaves_nothing(home: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        sync.Volume.create(**kwargs)
    assert sync.Volume.list() == []
    assert not (home / "volumes").exists() or list((home / "volumes").iterdir()) == []


def test_name_rules_accept_the_full_alphabet(home: Path) -> None:
    name = "A0." + "b_c-d" + "x" * 120
    assert sync.Volume.create(name).name == name


def test_remove_refuses_while_mounted_then_succeeds_after_detach(home: Path) -> None:
    sync.Volume.create("shared")
    store = Store(home)
    me = ProcessIdentity.current()
    store.add_sandbox(SandboxRecord(name="sb-1", backend="namespace", owner=me, status="running"))
    store.attach_volume("sb-1", "shared", "/data", readonly=False, owner=me)
    with pytest.raises(VolumeInUseError, match="volume shared is attached to active sandbox sb-1"):
        sync.Volume.remove("shared")
    assert (home / "volumes" / "shared").is_dir()
    store.detach_volumes("sb-1")
    sync.Volume.remove("shared")
    assert not (home / "volumes" / "shared").exists()


def test_mount_record_of_a_dead_process_is_reaped(home: Path) -> None:
    sync.Volume.create("shared")
    child = subprocess.Popen(["sleep", "60"])
    try:
        owner = ProcessIdentity.of(child.pid)
        store = Store(home)
        store.add_sandbox(SandboxRecord(name="crashed", backend="vm", owner=owner, status="running"))
        store.attach_volume("crashed", "shared", "/data", readonly=True, owner=owner)
        with pytest.raises(VolumeInUseError):
            sync.Volume.remove("shared")
    finally:
        child.kill()
        child.wait()
    sync.Volume.remove("shared")  # the dead sandbox's record no longer blocks removal


def test_handle_mount_and_static_mount_builders(home: Path) -> None:
    handle = sync.Volume.create("v").handle
    assert handle.mount(readonly=True) == msb.MountConfig(msb.MountKind.NAMED, named="v", readonly=True)
    assert msb.Volume.named("v", readonly=True) == handle.mount(readonly=True)
    assert msb.Volume.tmpfs(size_mib=64).kind == "tmpfs"
    assert msb.Volume.bind("/srv", nodev=True).bind == "/srv"
    assert msb.Volume.disk("/x/img.vmdk").format == msb.DiskImageFormat.VMDK


def test_named_mount_modes(home: Path) -> None:
    existing = msb.Volume.named("cache")
    with pytest.raises(VolumeNotFoundError):
        sync.Volume.for_mount(existing)
    created = sync.Volume.for_mount(msb.Volume.named("cache", mode=msb.NamedVolumeMode.CREATE, quota_mib=64))
    assert created.quota_mib == 64
    with pytest.raises(VolumeAlreadyExistsError):
        sync.Volume.for_mount(msb.Volume.named("cache", mode="create"))
    assert sync.Volume.for_mount(existing).name == "cache"
    ensured = sync.Volume.for_mount(msb.Volume.named("disk", mode="ensure-exists", kind="disk", size_mib=8))
    assert ensured.kind == "disk"
    assert sync.Volume.for_mount(msb.Volume.named("disk", mode="ensure-exists")).size_mib == 8
    assert asyncio.run(msb.Volume.for_mount(existing)).name == "cache"


def test_a_locked_disk_image_blocks_removal(home: Path) -> None:
    image = sync.Volume.create("locked-disk", kind="disk", size_mib=8).handle.disk_image
    holder = subprocess.Popen(  # as a VMM holds its disks
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(image)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(VolumeInUseError, match="lock on its disk image"):
            sync.Volume.remove("locked-disk")
        assert sync.Volume.get("locked-disk").disk_image.exists()  # type: ignore[union-attr]
    finally:
        holder.kill()
        holder.wait()
    sync.Volume.remove("locked-disk")  # the lock died with its holder
