"""vm sandboxes from snapshot templates, end to end: the first sandbox of a configuration builds the template, the
next restores it to its first exec, binds its own volumes to the template's slots, and is not its siblings' twin.
Needs hardware KVM (the ``vm`` marker skips them with the reason elsewhere)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from _vmcore.layout import MAX_DEVICES
from _vmcore.template_cache import TemplateCache
from pytest_microsandbox.sandbox._hostroot import host_mounts
from pytest_microsandbox.sandbox._vm_backend import virtiofs_available
from pytest_microsandbox.sync import Sandbox, VmOptions, Volume
from pytest_microsandbox.vmm.template import DISK_SLOTS
from tests.timeouts import BOOT

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(not virtiofs_available(), reason="this build of _vmcore has no virtio-fs device")]
# Printed by every boot, never by a restored clone. (Not the "Linux version" banner: the guest's console is hvc0, and
# Linux's virtio console drops what the kernel printed before the device probed, the banner included.)
BOOT_LINE = "Run /init as init process"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _templates(home: Path) -> list[Path]:
    """Every directory in the template cache but its digest memo: whole templates, and any half-built one."""
    root = home / "snapshots"
    memo = TemplateCache(root).digest_memo
    return sorted(p for p in root.iterdir() if p.is_dir() and p != memo) if root.is_dir() else []


def _console(sb: Sandbox) -> str:
    return (sb.run_dir / "console.log").read_text(errors="replace")


def test_the_second_sandbox_restores_the_first_ones_template(home: Path) -> None:
    with Sandbox.create(isolation="vm", home=home, boot_timeout=BOOT) as first:
        assert first.exec("true").exit_code == 0
        assert BOOT_LINE in _console(first)  # the template was booted for it
    [template] = _templates(home)
    assert (template / "manifest.json").is_file() and (template / "key.json").is_file()
    with Sandbox.create(isolation="vm", home=home) as second:
        assert second.exec("echo", "restored").stdout == "restored\n"
        assert BOOT_LINE not in _console(second)
        assert f"msb-vmm: restored snapshot template {template.name}" in _console(second)
    assert _templates(home) == [template]  # the same configuration: the same template


def test_another_memory_size_is_another_template(home: Path) -> None:
    for memory_mib in (256, 384):
        with Sandbox.create(isolation="vm", home=home, memory_mib=memory_mib, boot_timeout=BOOT) as sb:
            assert int(sb.shell("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout) <= memory_mib * 1024
    assert len(_templates(home)) == 2


def test_a_build_evicts_templates_beyond_snapshot_keep(home: Path) -> None:
    for memory_mib in (256, 384):
        with Sandbox.create(isolation="vm", home=home, memory_mib=memory_mib, boot_timeout=BOOT,
                            vm=VmOptions(snapshot_keep=1)) as sb:
            assert sb.exec("true").exit_code == 0
    [kept] = _templates(home)
    assert '"memory_mib": 384' in (kept / "key.json").read_text()


def test_a_clones_volumes_are_bound_to_the_templates_slots(home: Path, tmp_path: Path) -> None:
    Sandbox.create(isolation="vm", home=home, boot_timeout=BOOT).remove()  # the template, without volumes
    vol = Volume.create("cache", home=home)
    vol.fs.write("seed.txt", b"host seed")
    shared = tmp_path / "shared"
    shared.mkdir()
    image = tmp_path / "disk.raw"
    content = tmp_path / "content"
    content.mkdir()
    (content / "hello.txt").write_text("on the disk")
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(content), str(image), "8M"], check=True)
    volumes = {"/data": vol.handle.mount(), "/disk": Volume.disk(image)}
    # The host image's own shares (its root, /usr, the interpreter's prefixes: four for a pyenv interpreter in a
    # venv) leave this many of the template's virtio-fs slots to volumes; a sandbox needing more boots cold.
    free_slots = MAX_DEVICES - 1 - DISK_SLOTS - (1 + len(host_mounts()))
    assert free_slots >= 1
    if free_slots >= 2:
        volumes["/ro"] = Volume.bind(shared, readonly=True)
    with Sandbox.create(isolation="vm", home=home, volumes=volumes) as sb:
        assert BOOT_LINE not in _console(sb)
        assert sb.exec("cat", "/data/seed.txt").stdout == "host seed"
        assert sb.shell("echo from-clone > /data/out.txt").exit_code == 0
        if "/ro" in volumes:
            assert sb.shell("touch /ro/x").exit_code != 0
        assert sb.exec("cat", "/disk/hello.txt").stdout == "on the disk"
        assert sb.shell("echo written > /disk/new.txt && sync").exit_code == 0
    assert vol.fs.read("out.txt") == b"from-clone\n"
    assert len(_templates(home)) == 1


def test_clones_are_not_twins(home: Path) -> None:
    Sandbox.create(isolation="vm", home=home, boot_timeout=BOOT).remove()
    with Sandbox.create(isolation="vm", home=home, name="clone-a") as a, \
            Sandbox.create(isolation="vm", home=home, name="clone-b") as b:
        assert (a.exec("hostname").stdout, b.exec("hostname").stdout) == ("clone-a\n", "clone-b\n")
        for sb in (a, b):  # the wall clock was stepped to the host's, not left at the template's
            assert abs(int(sb.exec("date", "+%s").stdout) - time.time()) < 30
        draws = [sb.shell("head -c 32 /dev/urandom | od -An -tx1").stdout for sb in (a, b)]
        assert draws[0] != draws[1]
        # the kernel makes boot_id at its first read: nothing reads it before the template's ready point
        boot_ids = [sb.exec("cat", "/proc/sys/kernel/random/boot_id").stdout for sb in (a, b)]
        assert boot_ids[0] != boot_ids[1]


def test_snapshots_off_boots_every_sandbox(home: Path) -> None:
    with Sandbox.create(isolation="vm", home=home, boot_timeout=BOOT, vm=VmOptions(snapshots=False)) as sb:
        assert sb.exec("true").exit_code == 0
        assert BOOT_LINE in _console(sb)
    assert _templates(home) == []


def test_a_corrupted_template_is_rebuilt_not_booted(home: Path) -> None:
    Sandbox.create(isolation="vm", home=home, boot_timeout=BOOT).remove()
    [template] = _templates(home)
    state = template / "state.json"
    state.write_bytes(state.read_bytes().replace(b'"status"', b'"stat0s"', 1))
    with Sandbox.create(isolation="vm", home=home, boot_timeout=BOOT) as sb:
        assert sb.exec("true").exit_code == 0
    [rebuilt] = _templates(home)
    assert rebuilt == template and b'"stat0s"' not in (rebuilt / "state.json").read_bytes()
