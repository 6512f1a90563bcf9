"""The snapshot template cache: built once per key (also by concurrent processes), found again, rebuilt when
broken, and a restore from a corrupted template refused then rebuilt."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from _vmcore.errors import SnapshotError
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.snapshot import MEMORY
from _vmcore.template_cache import TemplateCache, config_key
from _vmcore.tinyguest import counting_code, tiny_guest_elf

KVM = detect_kvm()
needs_kvm = pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")


def _config(kernel: Path) -> MachineConfig:
    return MachineConfig(kernel=str(kernel), memory_mib=16)


def _builder(kernel: Path, log: Path):
    def build(directory: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        with Machine(_config(kernel)) as m:
            m.start()
            m.wait_for_console("a", timeout=60)
            m.snapshot(directory)
    return build


@pytest.fixture
def kernel(tmp_path) -> Path:
    path = tmp_path / "count.elf"
    path.write_bytes(tiny_guest_elf(counting_code("c", delay=0x40000)))
    return path


def _build_in_child(root: str, kernel: str, log: str) -> None:
    TemplateCache(root).get_or_build({"k": 1}, _builder(Path(kernel), Path(log)))


@needs_kvm
def test_built_once_by_concurrent_processes(tmp_path, kernel):
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path / "cache"), str(kernel), str(log)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert log.read_text() == "built\n"
    cache = TemplateCache(tmp_path / "cache")
    assert cache.lookup({"k": 1}) is not None and cache.lookup({"k": 2}) is None


@needs_kvm
def test_corrupted_template_is_refused_then_rebuilt(tmp_path, kernel):
    log = tmp_path / "builds.log"
    cache = TemplateCache(tmp_path / "cache")
    key = {"kernel": "count", "memory_mib": 16}
    path = cache.get_or_build(key, _builder(kernel, log))
    with open(path / MEMORY, "r+b") as f:  # a bit flipped on disk
        f.write(b"\xff")
    with pytest.raises(SnapshotError, match="corrupted"):
        Machine.restore(path, _config(kernel))
    cache.invalidate(key)
    path = cache.get_or_build(key, _builder(kernel, log))
    assert log.read_text() == "built\nbuilt\n"
    with Machine.restore(path, _config(kernel)) as m:
        m.start()
        assert m.wait(timeout=60) == "reset"
        assert m.console.text() == "bc"


def test_a_builder_that_leaves_no_snapshot_is_an_error(tmp_path):
    cache = TemplateCache(tmp_path / "cache")
    with pytest.raises(SnapshotError, match="no snapshot"):
        cache.get_or_build({"k": 1}, lambda d: None)
    assert cache.lookup({"k": 1}) is None
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_config_key_names_what_a_template_depends_on(tmp_path, kernel):
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(4096))
    base = MachineConfig(kernel=str(kernel), memory_mib=64, disks=[Disk(str(disk), read_only=True)])
    key = config_key(base, image_digest="sha256:abc", ready="READY")
    assert key == config_key(base, image_digest="sha256:abc", ready="READY")
    copy = tmp_path / "copy.raw"
    copy.write_bytes(bytes(4096))
    assert key == config_key(MachineConfig(kernel=str(kernel), memory_mib=64, disks=[Disk(str(copy), read_only=True)]),
                             image_digest="sha256:abc", ready="READY")
    for other in (config_key(base, image_digest="sha256:def", ready="READY"),
                  config_key(MachineConfig(kernel=str(kernel), memory_mib=128, disks=base.disks),
                             "sha256:abc", "READY"),
                  config_key(MachineConfig(kernel=str(kernel), memory_mib=64, vcpus=2, disks=base.disks),
                             "sha256:abc", "READY"),
                  config_key(MachineConfig(kernel=str(kernel), memory_mib=64), "sha256:abc", "READY")):
        assert other != key
    assert TemplateCache(tmp_path).path_for(key) != TemplateCache(tmp_path).path_for({**key, "vcpus": 2})
