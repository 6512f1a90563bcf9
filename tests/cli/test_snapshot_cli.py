"""``msb snapshot ls|rm|prune`` over a real template cache (tiny-guest snapshots: any /dev/kvm will do)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _vmcore.host import KvmKind, detect_kvm
from _vmcore.machine import Machine, MachineConfig
from _vmcore.template_cache import LAST_USED, TemplateCache
from pytest_microsandbox.cli import main
from tests.support.tinyguest import counting_code, tiny_guest_elf

KVM = detect_kvm()
pytestmark = pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")


@pytest.fixture
def templates(home: Path, tmp_path: Path) -> TemplateCache:
    kernel = tmp_path / "count.elf"
    kernel.write_bytes(tiny_guest_elf(counting_code("c", delay=0x40000)))

    def build(directory: Path) -> None:
        with Machine(MachineConfig(kernel=str(kernel), memory_mib=16)) as m:
            m.start()
            m.wait_for_console("a", timeout=60)
            m.snapshot(directory)

    cache = TemplateCache(home / "snapshots")
    for memory_mib in (256, 512):
        cache.get_or_build({"image": "sha256:" + "ab" * 32, "memory_mib": memory_mib, "vcpus": 1}, build)
    return cache


def test_ls_rm_prune(templates: TemplateCache, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "IMAGE", "MEMORY", "VCPUS", "DISK", "CREATED", "LAST", "USED"]
    assert sorted(line.split()[2] for line in lines[1:]) == ["256Mi", "512Mi"]
    first = templates.entries()[0]
    assert main(["snapshot", "rm", first.id[:8]]) == 0
    assert capsys.readouterr().out.strip() == first.id
    assert [t.id for t in templates.entries()] != [] and first.id not in [t.id for t in templates.entries()]
    assert main(["snapshot", "rm", "nosuchtemplate"]) == 1
    assert "no template matches" in capsys.readouterr().err
    abandoned = templates.root / "0123abcd.tmp-999999999"  # a builder that died mid-build
    abandoned.mkdir()
    [left] = templates.entries()
    assert main(["snapshot", "prune", "--keep", "1"]) == 0
    assert capsys.readouterr().out.split() == [abandoned.name]
    assert templates.entries() == [left] and not abandoned.exists()
    assert main(["snapshot", "prune"]) == 0
    assert capsys.readouterr().out.split() == [left.id]
    assert templates.entries() == []


def test_prune_keeps_the_most_recently_used(templates: TemplateCache, capsys: pytest.CaptureFixture[str]) -> None:
    older, newer = templates.entries()
    os.utime(older.path / LAST_USED, (2_000_000_000, 2_000_000_000))  # the older one was used last
    assert main(["snapshot", "prune", "--keep", "1"]) == 0
    assert capsys.readouterr().out.split() == [newer.id]
    assert [t.id for t in templates.entries()] == [older.id]
    with pytest.raises(SystemExit) as refused:
        main(["snapshot", "prune", "--keep", "x"])
    assert refused.value.code == 2 and "expected a number of templates" in capsys.readouterr().err
