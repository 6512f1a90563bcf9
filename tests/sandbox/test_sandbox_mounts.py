"""Each mount kind with each option, end to end: what the guest may and may not do on it."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_microsandbox.sandbox._ns_hostmounts import loop_mounts_unavailable
from pytest_microsandbox.sync import Sandbox, Volume


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    (d / "seed.txt").write_text("from the host")
    shutil.copy("/bin/true", d / "true-bin")
    return d


def _errno_of(sb: Sandbox, script: str) -> int:
    """Run a Python snippet; return the errno it raised (0 when it succeeded)."""
    code = f"import os, sys\ntry:\n    {script}\nexcept OSError as e:\n    sys.exit(e.errno)\n"
    return sb.exec("python3", "-c", code).exit_code


def test_bind_read_write_and_readonly(make_sandbox, host_dir: Path) -> None:
    sb = make_sandbox(volumes={"/rw": Volume.bind(host_dir), "/ro": Volume.bind(host_dir, readonly=True)})
    assert sb.exec("cat", "/ro/seed.txt").stdout == "from the host"
    assert sb.shell("echo guest > /rw/out.txt").exit_code == 0
    assert (host_dir / "out.txt").read_text() == "guest\n"
    assert _errno_of(sb, "open('/ro/nope', 'w')") == errno.EROFS
    assert _errno_of(sb, "os.remove('/ro/seed.txt')") == errno.EROFS
    assert (host_dir / "seed.txt").exists()


@pytest.fixture
def host_dir_with_a_mount_inside(host_dir: Path) -> Iterator[Path]:
    """``host_dir/sub`` is a tmpfs of its own: a read-only bind of ``host_dir`` must hold below it too."""
    sub = host_dir / "sub"
    sub.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "msb-test", str(sub)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        shutil.copy("/bin/true", sub / "true-bin")
        yield host_dir
    finally:
        subprocess.run(["umount", "-l", str(sub)], check=True)


def test_every_flag_holds_on_the_mounts_inside_the_source(make_sandbox, host_dir_with_a_mount_inside: Path) -> None:
    host_dir = host_dir_with_a_mount_inside
    sb = make_sandbox(volumes={"/ro": Volume.bind(host_dir, readonly=True), "/nx": Volume.bind(host_dir, noexec=True)})
    assert sb.exec("cat", "/ro/seed.txt").stdout == "from the host"
    assert _errno_of(sb, "open('/ro/sub/f', 'w')") == errno.EROFS
    assert _errno_of(sb, "os.remove('/ro/sub/true-bin')") == errno.EROFS
    assert sb.shell("/nx/sub/true-bin").exit_code == 126
    assert sorted(p.name for p in (host_dir / "sub").iterdir()) == ["true-bin"]


def test_noexec_nosuid_nodev_flags(make_sandbox, host_dir: Path) -> None:
    sb = make_sandbox(volumes={"/exec": Volume.bind(host_dir), "/noexec": Volume.bind(host_dir, noexec=True),
                               "/locked": Volume.bind(host_dir, nosuid=True, nodev=True)})
    assert sb.exec("/exec/true-bin").exit_code == 0
    refused = sb.shell("/noexec/true-bin")
    assert refused.exit_code == 126 and "denied" in refused.stderr.lower()
    mounts = [line.split() for line in sb.fs.read_text("/proc/mounts").splitlines()]
    options = {m[1]: set(m[3].split(",")) for m in mounts}
    assert "noexec" in options["/noexec"] and "noexec" not in options["/exec"]
    assert {"nosuid", "nodev"} <= options["/locked"]


def test_tmpfs_size_readonly_and_noexec(make_sandbox) -> None:
    sb = make_sandbox(volumes={"/scratch": Volume.tmpfs(size_mib=2), "/frozen": Volume.tmpfs(readonly=True),
                               "/nx": Volume.tmpfs(noexec=True)})
    assert _errno_of(sb, "open('/scratch/big', 'wb').write(b'x' * (3 << 20))") == errno.ENOSPC
    assert _errno_of(sb, "open('/scratch/small', 'wb').write(b'x' * 1000)") == 0
    assert _errno_of(sb, "open('/frozen/f', 'w')") == errno.EROFS
    assert sb.shell("cp /bin/true /nx/t && /nx/t").exit_code == 126


def test_named_volume_persists_across_sandboxes_and_to_the_host(make_sandbox, home: Path) -> None:
    vol = Volume.create("cache", home=home)
    vol.fs.write("seed.txt", b"host seed")
    first = make_sandbox(volumes={"/data": vol.handle.mount()})
    assert first.exec("cat", "/data/seed.txt").stdout == "host seed"
    assert first.shell("echo from-first > /data/run1.txt").exit_code == 0
    first.remove()
    second = make_sandbox(volumes={"/data": vol.handle.mount(readonly=True)})
    assert second.exec("cat", "/data/run1.txt").stdout == "from-first\n"
    assert _errno_of(second, "open('/data/x', 'w')") == errno.EROFS
    assert vol.fs.read("run1.txt") == b"from-first\n"


def test_named_volume_created_by_the_mount(make_sandbox, home: Path) -> None:
    sb = make_sandbox(volumes={"/made": Volume.named("fresh", mode="create")})
    sb.shell("echo made > /made/f")
    assert Volume.get("fresh", home=home).fs.read("f") == b"made\n"


@pytest.mark.skipif(loop_mounts_unavailable() is not None, reason=str(loop_mounts_unavailable()))
def test_disk_image_attached_read_only(make_sandbox, tmp_path: Path, home: Path, isolation: str) -> None:
    image = tmp_path / "disk.raw"
    content = tmp_path / "content"
    content.mkdir()
    (content / "hello.txt").write_text("on the disk")
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content), str(image), "8M"], check=True)
    sb = make_sandbox(volumes={"/disk": Volume.disk(image, readonly=True)})
    assert sb.exec("cat", "/disk/hello.txt").stdout == "on the disk"
    assert _errno_of(sb, "open('/disk/new', 'w')") == errno.EROFS


def test_disk_image_read_write_is_refused_by_the_namespace_backend(home: Path, tmp_path: Path) -> None:
    from pytest_microsandbox.errors import InvalidConfigError, SandboxError

    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    with pytest.raises((InvalidConfigError, SandboxError), match="read-only|root|loop"):
        Sandbox.create(isolation="namespace", home=home, volumes={"/disk": Volume.disk(image)})
    assert Sandbox.list(home=home) == []


def _fuse_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("fuse")]


def _quota_unenforceable(isolation: str) -> str | None:
    from pytest_microsandbox.sandbox._ns_hostmounts import fuse_mounts_unavailable

    return fuse_mounts_unavailable() if isolation == "namespace" else None


def test_quotas_hold_on_named_volumes_and_binds(make_sandbox, host_dir: Path, home: Path, isolation: str) -> None:
    if _quota_unenforceable(isolation):
        pytest.skip(str(_quota_unenforceable(isolation)))
    Volume.create("small", quota_mib=1, home=home)
    sb = make_sandbox(volumes={"/small": Volume.named("small"), "/bound": Volume.bind(host_dir, quota_mib=2),
                               "/ro": Volume.bind(host_dir, readonly=True, quota_mib=2)})
    assert sb.exec("cat", "/bound/seed.txt", "/ro/seed.txt").stdout == "from the host" * 2
    for where, limit in (("/small", 1), ("/bound", 2)):
        wrote = sb.shell(f"head -c {3 << 20} /dev/zero > {where}/big")
        assert wrote.exit_code != 0 and "No space left on device" in wrote.stderr, wrote
        assert int(sb.exec("stat", "-c", "%s", f"{where}/big").stdout) <= limit << 20
    assert Volume.get("small", home=home).fs.stat("big").size <= 1 << 20
    assert (host_dir / "big").stat().st_size <= 2 << 20
    assert _errno_of(sb, "open('/ro/nope', 'w')") == errno.EROFS
    assert sb.exec("python3", "-c", "import os; print(os.access('/ro', os.W_OK))").stdout.strip() == "False"
    sb.stop()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "fuse.msb" not in mounts and str(home) not in mounts  # nothing was ever mounted on the host
    assert _fuse_threads() == []


def test_a_quota_the_namespace_backend_cannot_enforce_is_refused(home: Path, host_dir: Path) -> None:
    from pytest_microsandbox.errors import SandboxError

    if not _quota_unenforceable("namespace"):
        pytest.skip("this host can enforce quotas in namespace sandboxes (root with /dev/fuse)")
    with pytest.raises(SandboxError, match="quota of /q.*isolation='vm'"):
        Sandbox.create(isolation="namespace", home=home, volumes={"/q": Volume.bind(host_dir, quota_mib=1)})
    assert Sandbox.list(home=home) == []


# O_DIRECT: what the device returns, not the page cache (ext4 mounted read-only still changes its buffers there)
GUEST_DEVICE_SHA256 = """
import hashlib, mmap, os, sys
for dev in os.listdir("/sys/block"):
    try:
        serial = open(f"/sys/block/{dev}/serial").read().strip()
    except OSError:
        continue
    if serial == sys.argv[1]:
        digest, buf = hashlib.sha256(), mmap.mmap(-1, 1 << 20)
        fd = os.open(f"/dev/{dev}", os.O_RDONLY | os.O_DIRECT)
        while n := os.readv(fd, [buf]):
            digest.update(buf[:n])
        print(digest.hexdigest())
"""


@pytest.mark.parametrize("isolation", [pytest.param("vm", marks=pytest.mark.vm)])
def test_qcow2_written_in_the_guest_checks_clean_and_vmdk_reads_back_identical(make_sandbox, tmp_path: Path) -> None:
    import hashlib

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (Debian's qemu-utils) is missing")
    content = tmp_path / "content"
    content.mkdir()
    (content / "hello.txt").write_text("on the disk")
    raw = tmp_path / "fs.raw"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content), str(raw), "16M"], check=True)
    qcow2, vmdk = tmp_path / "rw.qcow2", tmp_path / "ro.vmdk"
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw),
                    str(vmdk)], check=True)
    sb = make_sandbox(volumes={"/q": Volume.disk(qcow2), "/v": Volume.disk(vmdk, readonly=True)})
    assert sb.exec("cat", "/q/hello.txt", "/v/hello.txt").stdout == "on the disk" * 2
    wrote = sb.shell("head -c 3145728 /dev/urandom > /q/new.bin && sha256sum /q/new.bin && sync")
    assert wrote.exit_code == 0, wrote
    written = wrote.stdout.split()[0]
    assert _errno_of(sb, "open('/v/nope', 'w')") == errno.EROFS
    # the vmdk is the raw image, byte for byte, as the guest reads its whole block device (msb-disk1: /v)
    device = sb.exec("python3", "-c", GUEST_DEVICE_SHA256, "msb-disk1")
    assert device.stdout.strip() == hashlib.sha256(raw.read_bytes()).hexdigest(), device
    sb.stop()
    check = subprocess.run(["qemu-img", "check", str(qcow2)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout + check.stderr
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(back)], check=True)
    dumped = subprocess.run(["debugfs", "-R", "cat /new.bin", str(back)], capture_output=True, check=True).stdout
    assert hashlib.sha256(dumped).hexdigest() == written
