"""The snapshot template cache: built once per key (also by concurrent processes), found again, rebuilt when
broken, a restore from a corrupted template refused then rebuilt, and kept bounded by least recent use."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from _vmcore.errors import SnapshotError
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.machine import Disk, Machine, MachineConfig
from _vmcore.snapshot import MEMORY
from _vmcore.template_cache import LAST_USED, TemplateCache, config_key
from tests.support.tinyguest import counting_code, tiny_guest_elf

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


def test_config_key_holds_each_shares_identity(tmp_path, kernel):
    from _vmcore.devices.virtio_fs import VirtioFs

    def key(*shares: VirtioFs) -> dict:
        return config_key(MachineConfig(kernel=str(kernel), memory_mib=64, shares=list(shares)), "sha256:abc", "R")

    one = key(VirtioFs(None, "fs0"))
    assert one["shares"] == [VirtioFs(None, "fs0").identity()]
    assert one == key(VirtioFs(None, "fs0"))
    for other in (key(VirtioFs(None, "fs1")), key(VirtioFs(None, "fs0", request_queues=2)), key()):
        assert other != one


def _use(cache: TemplateCache, key: dict, ago: float) -> None:
    """A lookup that finds ``key``, its use then dated ``ago`` seconds back to order them."""
    path = cache.lookup(key)
    assert path is not None
    when = time.time() - ago
    os.utime(path / LAST_USED, (when, when))


@needs_kvm
def test_a_build_evicts_the_least_recently_used_beyond_keep(tmp_path, kernel):
    log = tmp_path / "builds.log"
    cache = TemplateCache(tmp_path / "cache", keep=2)
    a, b, c, d = ({"k": name} for name in "abcd")
    for key in (a, b):
        cache.get_or_build(key, _builder(kernel, log))
    _use(cache, a, 3600)  # a was used after b
    _use(cache, b, 7200)
    cache.get_or_build(c, _builder(kernel, log))
    assert cache.lookup(b) is None and not cache.path_for(b).exists()
    assert cache.lookup(a) is not None and cache.lookup(c) is not None
    # a template pinned by a process about to restore it stays beyond keep until that process has mapped it
    with cache.pinned(a):
        _use(cache, a, 3600)
        cache.get_or_build(d, _builder(kernel, log))
        assert {t.path for t in cache.entries()} == {cache.path_for(k) for k in (a, c, d)}
    assert cache.evict(2) == [cache.path_for(a).name]
    assert {t.path for t in cache.entries()} == {cache.path_for(k) for k in (c, d)}


@needs_kvm
def test_eviction_skips_a_template_another_process_holds_and_a_build_in_progress(tmp_path, kernel):
    from filelock import FileLock

    cache = TemplateCache(tmp_path / "cache")
    old, new = {"k": "old"}, {"k": "new"}
    for key in (old, new):
        cache.get_or_build(key, _builder(kernel, tmp_path / "builds.log"))
    _use(cache, old, 3600)
    in_progress = cache.root / f"{cache.path_for(old).name}.tmp-{os.getpid()}"  # a builder's, before its rename
    shutil.copytree(cache.path_for(old), in_progress)
    with FileLock(str(cache.path_for(old)) + ".lock"):  # being rebuilt or dropped elsewhere
        assert cache.evict(1) == []
    assert cache.evict(1) == [cache.path_for(old).name]
    assert [t.path for t in cache.entries()] == [cache.path_for(new)] and in_progress.is_dir()


@needs_kvm
def test_a_corrupted_template_rebuilt_by_another_process_is_not_dropped_again(tmp_path, kernel):
    log = tmp_path / "builds.log"
    cache = TemplateCache(tmp_path / "cache")
    key = {"k": 1}
    seen = cache.fingerprint(cache.get_or_build(key, _builder(kernel, log)))
    cache.invalidate(key)  # another process found it broken first, and built it again
    path = cache.get_or_build(key, _builder(kernel, log))
    cache.invalidate(key, only_if=seen)
    assert cache.lookup(key) == path and log.read_text() == "built\nbuilt\n"
    cache.invalidate(key, only_if=cache.fingerprint(path))
    assert cache.lookup(key) is None


@needs_kvm
def test_prune_keeps_the_most_recently_used(tmp_path, kernel):
    cache = TemplateCache(tmp_path / "cache")
    keys = [{"k": i} for i in range(3)]
    for i, key in enumerate(keys):
        cache.get_or_build(key, _builder(kernel, tmp_path / "builds.log"))
        _use(cache, key, 10 - i)
    assert cache.prune(keep=1) == [cache.path_for(keys[1]).name, cache.path_for(keys[0]).name]
    assert [t.path for t in cache.entries()] == [cache.path_for(keys[2])]
    assert cache.prune() == [cache.path_for(keys[2]).name]
    assert cache.entries() == [] and all(p.suffix in (".lock", ".pin") for p in cache.root.iterdir())
    with pytest.raises(ValueError, match="negative"):
        cache.prune(keep=-1)


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        TemplateCache(tmp_path, keep=0)
