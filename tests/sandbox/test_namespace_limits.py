"""Namespace sandboxes get memory, cpu and process limits from a cgroup v2 of their own.

This host's cgroups are v1, so these run where v2 is: marked ``vm``, they run in the nested rig (L1 mounts
cgroup2), and natively on any host with hardware KVM and a cgroup v2 hierarchy we may write to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox.sandbox._namespace_backend import limits_unavailable, namespaces_unavailable
from pytest_microsandbox.sync import Sandbox

pytestmark = pytest.mark.vm

FORKS = """
import os, time
made = 0
try:
    for _ in range(3000):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
except OSError as e:
    print("refused", e.errno, made)
else:
    print("made", made)
"""


def _cgroup_of(pid: int) -> Path:
    line = next(x for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if x.startswith("0::"))
    return Path("/sys/fs/cgroup") / line[3:].lstrip("/")


@pytest.fixture
def make_limited(home: Path):
    if namespaces_unavailable():
        pytest.skip(str(namespaces_unavailable()))
    if limits_unavailable():
        pytest.skip(str(limits_unavailable()))
    made: list[Sandbox] = []

    def make(memory_mib: int = 64) -> Sandbox:
        made.append(Sandbox.create(isolation="namespace", memory_mib=memory_mib, cpus=1, home=home))
        return made[-1]

    yield make
    for sb in made:
        sb.remove()


@pytest.fixture
def limited(make_limited) -> Sandbox:
    return make_limited()


def test_each_sandbox_has_a_cgroup_with_its_limits_gone_with_it(limited: Sandbox) -> None:
    cgroup = _cgroup_of(limited.pid)
    assert cgroup.name.startswith(limited.name) and cgroup.parent.name == "msb-sandboxes"
    assert (cgroup / "memory.max").read_text().strip() == str(64 << 20)
    assert (cgroup / "cpu.max").read_text().split() == ["100000", "100000"]
    assert int((cgroup / "pids.max").read_text()) == 1024
    limited.stop()
    assert not cgroup.exists()


def test_memory_past_memory_mib_is_killed(limited: Sandbox) -> None:
    hog = limited.exec("python3", "-c", "b = bytearray(256 << 20)\nb[::4096] = b'x' * (64 << 10)\nprint('survived')")
    assert "survived" not in hog.stdout and hog.exit_code != 0, hog
    assert limited.exec("true").exit_code == 0  # the sandbox itself lives on


def test_a_fork_bomb_stops_at_the_process_limit(make_limited) -> None:
    roomy = make_limited(memory_mib=2048)  # the process limit is what stops it, not memory
    out = roomy.exec("python3", "-c", FORKS, timeout=120).stdout.split()
    assert out[0] == "refused" and out[1] == "11" and int(out[2]) < 1024, out
