"""The agent as PID 1 of a real guest: QEMU microvm under TCG, libkrunfw's kernel (wrapped as a PVH ELF), our
initramfs, the agent on a virtio-serial port. Two boots: one on the initramfs with a mount plan, one with the root
built from an ext4 block device (by virtio serial) under an overlay, plus a second disk and the restricted profile."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu_guest import (
    VIRTIOFSD_UNUSABLE,
    QemuGuest,
    Virtiofsd,
    busybox_rootfs,
    kernel_elf,
    make_erofs,
    make_ext4,
    missing_prerequisite,
)

from pytest_microsandbox.agent import BootConfig, GuestMount

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
CLONE_CLOCK_S = 2_000_000_000  # 2033-05-18: no RTC says that

_NEEDS_EROFS = pytest.mark.skipif(shutil.which("mkfs.erofs") is None, reason="mkfs.erofs not installed (erofs-utils)")
_REASON = missing_prerequisite()
if _REASON:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> tuple[Path, str]:
    return kernel_elf(tmp_path_factory.mktemp("kernel") / "krunfw-pvh.elf")


@pytest.fixture(scope="module")
def initramfs_guest(kernel, tmp_path_factory) -> Iterator[QemuGuest]:
    plan = BootConfig(
        hostname="msb-guest",
        mounts=[GuestMount("tmpfs", "/scratch", size_mib=8, mode=0o700, noexec=True, nosuid=True, nodev=True)],
        env={"PATH": "/bin", "GREETING": "from-boot"},
        workdir="/tmp",
        entropy=os.urandom(64),
        realtime_ns=CLONE_CLOCK_S * 10**9,
    )
    guest = QemuGuest(tmp_path_factory.mktemp("guest1"), kernel[0], plan.encode())
    yield guest
    guest.stop()


def test_guest_hello(initramfs_guest: QemuGuest) -> None:
    info = initramfs_guest.client.hello()
    assert info.pid == 1 and info.booted, initramfs_guest.console


def test_guest_echo(initramfs_guest: QemuGuest) -> None:
    r = initramfs_guest.client.exec("echo", "hello from the guest")
    assert (r.exit_code, r.stdout) == (0, "hello from the guest\n")


def test_guest_kernel_is_libkrunfw(initramfs_guest: QemuGuest, kernel) -> None:
    r = initramfs_guest.client.exec("uname", "-r")
    assert r.stdout.strip() == kernel[1]


@pytest.mark.parametrize("code", [0, 1, 77])
def test_guest_exit_codes(initramfs_guest: QemuGuest, code: int) -> None:
    r = initramfs_guest.client.shell(f"echo out; echo err >&2; exit {code}")
    assert (r.exit_code, r.stdout, r.stderr) == (code, "out\n", "err\n")


def test_guest_large_output(initramfs_guest: QemuGuest) -> None:
    size = 4 << 20
    r = initramfs_guest.client.shell(f"yes 0123456789abcdef | head -c {size}")
    assert r.stdout_bytes == (b"0123456789abcdef\n" * (size // 17 + 1))[:size]


def test_guest_file_round_trip(initramfs_guest: QemuGuest) -> None:
    data = bytes(range(256)) * 2048
    fs = initramfs_guest.client.fs
    fs.write("/tmp/dir/blob", data)
    assert fs.read("/tmp/dir/blob") == data
    assert [e.path for e in fs.list("/tmp/dir")] == ["/tmp/dir/blob"]
    assert initramfs_guest.client.exec("wc", "-c", "/tmp/dir/blob").stdout.split()[0] == str(len(data))
    fs.remove("/tmp/dir", recursive=True)
    assert not fs.exists("/tmp/dir")


def test_guest_boot_plan_applied(initramfs_guest: QemuGuest) -> None:
    c = initramfs_guest.client
    assert c.exec("hostname").stdout == "msb-guest\n"
    assert c.shell("echo $GREETING; pwd").stdout == "from-boot\n/tmp\n"
    mounts = c.fs.read("/proc/mounts").decode()
    scratch = next(line for line in mounts.splitlines() if line.split()[1] == "/scratch")
    assert scratch.split()[2] == "tmpfs"
    opts = scratch.split()[3].split(",")
    assert {"noexec", "nosuid", "nodev", "size=8192k", "mode=700"} <= set(opts)
    for fs_type, target in (
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/tmp"),
    ):
        assert any(line.split()[1:3] == [target, fs_type] for line in mounts.splitlines()), (target, mounts)


def test_guest_clock_is_stepped_to_the_boot_configs(initramfs_guest: QemuGuest) -> None:
    """What a snapshot clone gets from its host: the wall clock (a fixed time here, to tell it from the RTC's)."""
    now = int(initramfs_guest.client.exec("date", "+%s").stdout)
    assert CLONE_CLOCK_S <= now < CLONE_CLOCK_S + 3600


def test_guest_pty_and_kill(initramfs_guest: QemuGuest) -> None:
    c = initramfs_guest.client
    assert c.exec("sh", "-c", "test -t 1 && echo tty", pty=True).stdout.strip() == "tty"
    h = c.start("sleep", "100")
    h.pid()
    h.kill()
    assert h.wait(30).signal == 9


def test_guest_zombies_are_reaped(initramfs_guest: QemuGuest) -> None:
    c = initramfs_guest.client
    c.shell("sleep 0.1 & sleep 0.1 & exit 0")  # orphans re-parented to PID 1
    c.exec("sleep", "0.5")
    stats = c.shell("cat /proc/[0-9]*/stat 2>/dev/null").stdout
    assert not [line for line in stats.splitlines() if line.rsplit(")", 1)[1].split()[0] == "Z"]


def test_guest_clean_poweroff(kernel, tmp_path) -> None:
    guest = QemuGuest(tmp_path, kernel[0])
    try:
        assert guest.client.exec("true").exit_code == 0
        assert guest.poweroff() == 0
        assert "msb-agent: powering off" in guest.console
    finally:
        guest.stop()


def test_guest_agent_on_a_console_tty(kernel, tmp_path) -> None:
    """The agent port as a second virtio console (/dev/hvc1): a tty the agent must make raw to pass binary data."""
    guest = QemuGuest(tmp_path, kernel[0], BootConfig(env={"PATH": "/bin"}).encode(), agent_on_console=True)
    try:
        data = bytes(range(256)) * 256
        assert guest.client.exec("cat", stdin=data).stdout_bytes == data
        guest.client.fs.write("/tmp/bin", data)
        assert guest.client.fs.read("/tmp/bin") == data
        assert guest.poweroff() == 0
    finally:
        guest.stop()


@pytest.mark.parametrize("root_fstype", ["ext4", pytest.param("erofs", marks=_NEEDS_EROFS)])
def test_guest_overlay_root_from_block_device(kernel, tmp_path, root_fstype: str) -> None:
    make = make_ext4 if root_fstype == "ext4" else make_erofs
    root_img = make(busybox_rootfs(tmp_path / "rootfs", "root-disk"), tmp_path / f"root.{root_fstype}")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "hello.txt").write_text("on the data disk")
    data_img = make_ext4(data_dir, tmp_path / "data.ext4", 8)
    plan = BootConfig(
        root=GuestMount("block_serial", source="msb-root"),
        mounts=[GuestMount("block_serial", "/data", "msb-data", readonly=True, noexec=True)],
        env={"PATH": "/bin"},
        restricted=True,
    )
    guest = QemuGuest(
        tmp_path, kernel[0], plan.encode(), disks=[(root_img, "msb-root", True), (data_img, "msb-data", False)]
    )
    try:
        c = guest.client
        assert c.hello().booted, guest.console
        assert c.fs.read("/etc/marker") == b"root-disk"  # the block device is the root now
        assert not c.fs.exists("/init")  # the initramfs is gone from view
        c.fs.write("/etc/marker", b"changed in the upper")  # writable through the overlay
        assert c.exec("cat", "/etc/marker").stdout == "changed in the upper"
        mounts = c.fs.read("/proc/mounts").decode().splitlines()
        root = next(line.split() for line in mounts if line.split()[1] == "/")
        assert root[2] == "overlay" and "nosuid" in root[3] and "nodev" in root[3]
        data = next(line.split() for line in mounts if line.split()[1] == "/data")
        assert data[2] == "ext4" and {"ro", "noexec", "nosuid", "nodev"} <= set(data[3].split(","))
        assert c.fs.read("/data/hello.txt") == b"on the data disk"
        # a writable device mounted read-only is read-only in the guest's block layer too (a template's slots)
        data_dev = next(e.path.rsplit("/", 1)[1] for e in c.fs.list("/sys/block")
                        if c.fs.exists(f"{e.path}/serial") and c.fs.read(f"{e.path}/serial").strip() == b"msb-data")
        assert c.fs.read(f"/sys/block/{data_dev}/ro").strip() == b"1"
        status = c.fs.read("/proc/self/status").decode()  # the agent's own: CAP_SYS_ADMIN (bit 21) gone
        caps = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith("Cap")}
        assert all(not caps[k] & (1 << 21) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd"))
        r = c.exec("grep", "NoNewPrivs", "/proc/self/status")
        assert r.stdout.split() == ["NoNewPrivs:", "1"]
        denied = c.exec("mount", "-t", "tmpfs", "x", "/tmp")  # no CAP_SYS_ADMIN for commands either
        assert denied.exit_code != 0 and "permi" in denied.stderr.lower(), denied
        assert guest.poweroff() == 0
    finally:
        guest.stop()


@pytest.mark.skipif(VIRTIOFSD_UNUSABLE is not None, reason=str(VIRTIOFSD_UNUSABLE))
def test_guest_overlay_root_and_mount_from_virtiofs(kernel, tmp_path) -> None:
    rootdir = busybox_rootfs(tmp_path / "rootdir", "virtiofs-root")
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("shared from the host")
    daemons = [Virtiofsd(rootdir, tmp_path / "root.sock"), Virtiofsd(share, tmp_path / "share.sock")]
    plan = BootConfig(
        root=GuestMount("virtiofs", source="rootfs"),
        mounts=[GuestMount("virtiofs", "/share", "share", readonly=True, nodev=True)],
        env={"PATH": "/bin"},
    )
    guest = QemuGuest(
        tmp_path,
        kernel[0],
        plan.encode(),
        virtiofs=[(d.sock, t) for d, t in zip(daemons, ("rootfs", "share"), strict=True)],
    )
    try:
        c = guest.client
        assert c.hello().booted, guest.console
        assert c.fs.read("/etc/marker") == b"virtiofs-root"
        assert c.fs.read("/share/hello.txt") == b"shared from the host"
        c.fs.write("/etc/marker", b"upper only")  # the overlay's upper takes the write
        assert (rootdir / "etc" / "marker").read_text() == "virtiofs-root"
        refused = c.shell("echo x > /share/new")
        assert refused.exit_code != 0 and "Read-only" in refused.stderr
        mounts = [line.split() for line in c.fs.read("/proc/mounts").decode().splitlines()]
        assert next(m for m in mounts if m[1] == "/")[2] == "overlay"
        share_opts = next(m for m in mounts if m[1] == "/share")
        assert share_opts[2] == "virtiofs" and {"ro", "nodev"} <= set(share_opts[3].split(","))
        assert guest.poweroff() == 0
    finally:
        guest.stop()
        for d in daemons:
            d.stop()
