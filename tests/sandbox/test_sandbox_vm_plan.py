"""The vm backend's translation of a plan (runs anywhere: no VM is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox.agent import BootConfig, GuestMount
from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.sandbox._backend import DiskAttachment, GuestPlan
from pytest_microsandbox.sandbox._config import build_config
from pytest_microsandbox.sandbox._vm_backend import ROOT_SERIAL, virtiofs_available, vm_spec
from pytest_microsandbox.vmm.spec import DiskSpec, ShareSpec


def _plan(tmp_path: Path, mounts: list[GuestMount], disks: list[DiskAttachment] = ()) -> GuestPlan:
    config = build_config(name="v", image="example:1", volumes=None, memory_mib=256, cpus=2, env=None, workdir=None,
                          security="default", isolation="vm", boot_timeout=5)
    return GuestPlan(config, tmp_path, BootConfig(root=GuestMount("bind", source="/unused"), mounts=mounts),
                     list(disks))


def test_root_disk_tmpfs_and_disks_map_to_virtio_blk(tmp_path: Path) -> None:
    disk = DiskAttachment("/images/d.raw", "/data", "ext4", readonly=True, noexec=True, nosuid=False, nodev=False)
    spec, mounts = vm_spec(_plan(tmp_path, [GuestMount("tmpfs", "/scratch", size_mib=8)], [disk]),
                           Path("/cache/root.ext4"))
    assert (spec.memory_mib, spec.cpus) == (256, 2)
    assert spec.disks == (DiskSpec("/cache/root.ext4", read_only=True, serial=ROOT_SERIAL, format="raw"),
                          DiskSpec("/images/d.raw", read_only=True, serial="msb-disk0", format="raw"))
    root, *rest = mounts
    assert root == GuestMount("block_serial", source=ROOT_SERIAL)
    assert rest[0] == GuestMount("tmpfs", "/scratch", size_mib=8)
    assert rest[1] == GuestMount("block_serial", "/data", "msb-disk0", fstype="ext4", readonly=True, noexec=True)
    BootConfig(root=root, mounts=rest).encode()  # the agent's boot config accepts them


@pytest.mark.skipif(virtiofs_available(), reason="this build has virtio-fs")
def test_bind_mounts_without_virtiofs_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="virtio-fs"):
        vm_spec(_plan(tmp_path, [GuestMount("bind", "/in", "/srv/in", readonly=True)]), Path("/cache/root.ext4"))


@pytest.mark.skipif(not virtiofs_available(), reason="this build has no virtio-fs device")
def test_binds_become_virtiofs_shares_with_their_quota(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [GuestMount("bind", "/in", "/srv/in", readonly=True), GuestMount("bind", "/out", "/srv/o")])
    plan.quotas["/out"] = 64
    spec, (root, *mounts) = vm_spec(plan, None)
    assert root == GuestMount("virtiofs", source="msb-fs0")  # no root disk: the root directory is shared too
    assert spec.shares == (  # the root (an image: cached long), then the binds (the host's live directories)
        ShareSpec("msb-fs0", "/unused", readonly=True, quota_mib=None, cache_seconds=600.0),
        ShareSpec("msb-fs1", "/srv/in", readonly=True, quota_mib=None, cache_seconds=1.0),
        ShareSpec("msb-fs2", "/srv/o", readonly=False, quota_mib=64, cache_seconds=1.0))
    assert mounts == [GuestMount("virtiofs", "/in", "msb-fs1", readonly=True),
                      GuestMount("virtiofs", "/out", "msb-fs2")]
    too_many = _plan(tmp_path, [GuestMount("bind", f"/m{i}", f"/srv/{i}") for i in range(9)])
    with pytest.raises(SandboxError, match="at most"):
        vm_spec(too_many, None)


@pytest.mark.skipif(not virtiofs_available(), reason="this build has no virtio-fs device")
def test_an_overlay_is_a_read_only_share_with_the_writable_layer_built_in_the_guest(tmp_path: Path) -> None:
    spec, (_, mount) = vm_spec(_plan(tmp_path, [GuestMount("overlay", "/usr", "/usr", nodev=True)]), None)
    assert spec.shares[1] == ShareSpec("msb-fs1", "/usr", readonly=True, quota_mib=None, cache_seconds=600.0)
    assert mount == GuestMount("overlay", "/usr", "msb-fs1", fstype="virtiofs", nodev=True)


@pytest.mark.skipif(not virtiofs_available(), reason="this build has no virtio-fs device")
def test_vmm_builds_its_shares_and_says_what_they_served(tmp_path: Path, capsys) -> None:
    from pytest_microsandbox.vmm.process import ShareServers

    servers = ShareServers()
    image = servers(ShareSpec("msb-fs0", str(tmp_path), readonly=True, cache_seconds=600.0))
    bind = servers(ShareSpec("msb-fs1", str(tmp_path), readonly=False, quota_mib=8))
    assert (image.readonly, image.no_open, bind.readonly, bind.no_open) == (True, True, False, False)
    servers.report()
    assert capsys.readouterr().err.splitlines() == ["msb-vmm: share msb-fs0 served 0 requests ()",
                                                    "msb-vmm: share msb-fs1 served 0 requests ()"]
    image.close()
    bind.close()


def _disk_plan(tmp_path: Path, image: Path, isolation: str, **flags: bool):
    from pytest_microsandbox.sandbox._plan import build_plan
    from pytest_microsandbox.sync import Volume

    config = build_config(name="d", image="host", volumes={"/d": Volume.disk(image, **flags)}, memory_mib=256,
                          cpus=1, env=None, workdir=None, security="default", isolation=isolation, boot_timeout=5)
    return build_plan(config, tmp_path / "home", tmp_path)[0]


@pytest.fixture
def qemu_img() -> str:
    import shutil

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (Debian's qemu-utils) is missing")
    return "qemu-img"


def test_disk_formats_reach_the_vmm_by_name_and_bad_images_fail_at_create(tmp_path: Path, qemu_img: str) -> None:
    import subprocess

    from pytest_microsandbox.errors import InvalidConfigError

    good, encrypted = tmp_path / "good.qcow2", tmp_path / "locked.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(good), "1M"], check=True)
    header = good.read_bytes()  # crypt_method 2 (LUKS); qemu-img's own LUKS setup times the CPU and may refuse
    encrypted.write_bytes(header[:32] + (2).to_bytes(4, "big") + header[36:])
    plan = _disk_plan(tmp_path, good, "vm")
    assert [d.format for d in plan.disks] == ["qcow2"]
    spec, _ = vm_spec(plan, None)
    assert spec.disks[-1].format == "qcow2"
    with pytest.raises(InvalidConfigError, match="encrypted"):
        _disk_plan(tmp_path, encrypted, "vm")
    with pytest.raises(InvalidConfigError, match="namespace backend attaches raw images.*isolation='vm'"):
        _disk_plan(tmp_path, good, "namespace", readonly=True)
