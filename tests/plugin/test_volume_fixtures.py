"""The volume fixtures, driven from outside with pytester: lifecycle, xdist sharing, leak safety."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_microsandbox.store import Store
from pytest_microsandbox.sync import Volume
from tests.timeouts import scaled


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("MSB_HOME", str(path))
    return path


def test_named_volume_lifecycle(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import re
        from pytest_microsandbox.sync import Volume

        def test_fresh(named_volume, msb_run):
            assert re.fullmatch(rf"msb-{msb_run.run_id}-main-\\d+", named_volume.name)
            assert named_volume.fs.list("") == []
            named_volume.fs.write("seed.txt", b"hello")
            assert Volume.get(named_volume.name).fs.read("seed.txt") == b"hello"
            assert named_volume.labels["msb.fixture"] == "named_volume"
            print("VOLUME=" + named_volume.name)

        def test_factory_kinds(named_volume_factory):
            quota = named_volume_factory(quota_mib=8, labels={"purpose": "test"})
            disk = named_volume_factory(kind="disk", size_mib=8)
            assert quota.quota_mib == 8 and quota.labels["purpose"] == "test"
            assert disk.kind == "disk" and disk.disk_image.stat().st_size == 8 << 20
            assert quota.name != disk.name

        def test_mount_configs(named_volume, tmpfs_mount, bind_mount, tmp_path):
            assert named_volume.mount(readonly=True).readonly
            assert tmpfs_mount(size_mib=64).size_mib == 64
            assert bind_mount(tmp_path, readonly=True).bind == str(tmp_path)
        """
    )
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=3)
    assert Volume.list() == []  # every fixture volume removed at teardown
    kinds = [e.kind for e in Store(home).events()]
    assert kinds.count("volume.created") == kinds.count("volume.removed") == 4


def test_bind_mount_of_missing_path_is_an_error(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_microsandbox.errors import InvalidConfigError

        def test_missing(bind_mount):
            with pytest.raises(InvalidConfigError, match="does not exist"):
                bind_mount("/no/such/dir")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_volume_still_mounted_at_teardown_is_a_teardown_error(pytester: pytest.Pytester, home: Path) -> None:
    """A live sandbox (here: a record whose owner is a running process) keeps the volume: the rule is enforced."""
    pytester.makepyfile(
        """
        import subprocess
        import pytest
        from pytest_microsandbox.store import ProcessIdentity, SandboxRecord, Store

        @pytest.fixture
        def live_process():
            proc = subprocess.Popen(["sleep", "60"])
            yield proc
            proc.kill()
            proc.wait()

        def test_leaves_it_mounted(live_process, named_volume, msb_run):
            store = Store(msb_run.home)
            owner = ProcessIdentity.of(live_process.pid)
            store.add_sandbox(SandboxRecord(name="sb-left-running", backend="vm", owner=owner, status="running"))
            store.attach_volume("sb-left-running", named_volume.name, "/data", readonly=False, owner=owner)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*VolumeInUseError: volume msb-*-main-1 is attached to active sandbox "
                                 "sb-left-running*"])


SHARED_SUITE = """
import os, time
from pytest_microsandbox.sync import Volume

def pytest_microsandbox_populate_shared_volume(volume, config):
    volume.fs.write("populated-by.txt", str(os.getpid()).encode())
"""

SHARED_TESTS = """
import os, time
import pytest

@pytest.mark.parametrize("i", range(8))
def test_uses_shared(shared_volume, i, worker_id):
    assert shared_volume.fs.exists("populated-by.txt")
    shared_volume.fs.write(f"from-{worker_id}-{i}.txt", b"x")
    time.sleep(0.05)
    names = {e.path for e in shared_volume.fs.list("")}
    assert f"from-{worker_id}-{i}.txt" in names
"""


def test_shared_volume_across_two_xdist_workers(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makeconftest(SHARED_SUITE)
    pytester.makepyfile(SHARED_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", timeout=scaled(180))
    result.assert_outcomes(passed=8)
    events = Store(home).events()
    shared = [e for e in events if e.subject.endswith("-shared")]
    assert [e.kind for e in shared] == ["volume.created", "volume.removed"]  # once each, for the whole run
    assert Volume.list() == []


def test_shared_volume_without_xdist(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makeconftest(SHARED_SUITE)
    pytester.makepyfile(SHARED_TESTS.replace(", worker_id", "").replace("{worker_id}", "main"))
    pytester.runpytest().assert_outcomes(passed=8)
    assert [e.kind for e in Store(home).events()] == ["volume.created", "volume.removed"]


def test_leftovers_of_a_dead_owner_are_swept_and_a_live_owners_kept(pytester: pytest.Pytester, home: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        from pytest_microsandbox.store import ProcessIdentity

        live_owner = ProcessIdentity.of(sleeper.pid)
        Volume.create("msb-aaaa-gw0-1", labels={"msb.fixture": "named_volume",
                                                "msb.owner": f"{live_owner.pid}:{live_owner.start_ticks}"})
        Volume.create("msb-bbbb-gw0-1", labels={"msb.fixture": "named_volume", "msb.owner": f"{dead.pid}:1"})
        Volume.create("users-own-volume")
        pytester.makepyfile("def test_x():\n    pass\n")
        pytester.runpytest().assert_outcomes(passed=1)
        assert sorted(h.name for h in Volume.list()) == ["msb-aaaa-gw0-1", "users-own-volume"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_sweep_judges_owners_only_where_their_pids_mean_something(pytester: pytest.Pytester, home: Path) -> None:
    """A home shared with another machine (a VM or container with it mounted in, an NFS home): its pids are not
    ours, so its volumes are kept; one made before this host's last reboot is certainly a leftover."""
    from pytest_microsandbox.store import HostIdentity

    dead = subprocess.Popen(["true"])
    dead.wait()
    here = HostIdentity.current()
    elsewhere = {
        "msb-aaaa-gw0-1": HostIdentity("another-host", "0" * 32, here.pid_namespace),  # its pid may be alive there
        "msb-bbbb-gw0-1": HostIdentity(here.hostname, here.boot_id, "4026531999"),  # a container on this boot
        "msb-cccc-gw0-1": HostIdentity(here.hostname, "f" * 32, here.pid_namespace),  # this host, an earlier boot
        "msb-dddd-gw0-1": here,
    }
    for name, machine in elsewhere.items():
        Volume.create(name, labels={"msb.fixture": "named_volume", "msb.owner": f"{dead.pid}:1",
                                    "msb.machine": str(machine)})
    Volume.create("msb-eeee-gw0-1", labels={"msb.fixture": "named_volume", "msb.owner": f"{dead.pid}:1",
                                            "msb.machine": "garbled"})
    pytester.makepyfile("def test_x():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert sorted(h.name for h in Volume.list()) == ["msb-aaaa-gw0-1", "msb-bbbb-gw0-1", "msb-eeee-gw0-1"]


def test_a_fixtures_volume_names_the_machine_its_owner_runs_on(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile("""
        from pytest_microsandbox.store import HostIdentity

        def test_x(named_volume):
            assert named_volume.labels["msb.machine"] == str(HostIdentity.current())
    """)
    pytester.runpytest().assert_outcomes(passed=1)


SLOW_TEST = """
import time

def test_slow(named_volume):
    print("VOLUME=" + named_volume.name, flush=True)
    time.sleep(120)
"""


def _start_slow_run(pytester: pytest.Pytester, name: str) -> tuple[subprocess.Popen, str]:
    path = pytester.makepyfile(**{name: SLOW_TEST})
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", str(path)],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"VOLUME=(\S+)", line)
        if match:
            return proc, match.group(1)
        assert time.monotonic() < deadline, "the inner run never reached its test"
    raise AssertionError(f"the inner run ended early with {proc.wait()}")


def test_sigkilled_run_is_reaped_by_the_next_and_a_live_run_is_untouched(pytester: pytest.Pytester,
                                                                          home: Path) -> None:
    killed, killed_volume = _start_slow_run(pytester, "test_killed")
    live, live_volume = _start_slow_run(pytester, "test_live")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        assert {h.name for h in Volume.list()} == {killed_volume, live_volume}
        pytester.makepyfile(test_next="def test_x():\n    pass\n")
        pytester.runpytest("test_next.py").assert_outcomes(passed=1)
        assert {h.name for h in Volume.list()} == {live_volume}  # only the dead run's leftover was reaped
    finally:
        live.kill()
        live.wait(30)


def test_sigterm_tears_down(pytester: pytest.Pytester, home: Path) -> None:
    proc, volume = _start_slow_run(pytester, "test_terminated")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    assert volume not in {h.name for h in Volume.list()}


def test_first_ctrl_c_tears_down(pytester: pytest.Pytester, home: Path) -> None:
    proc, volume = _start_slow_run(pytester, "test_interrupted")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) != 0
    assert volume not in {h.name for h in Volume.list()}


def test_worker_id_in_names_under_xdist(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import re

        def test_name(named_volume, msb_run, worker_id):
            assert worker_id.startswith("gw")
            assert re.fullmatch(rf"msb-{msb_run.run_id}-{worker_id}-1", named_volume.name)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", timeout=scaled(180))
    result.assert_outcomes(passed=1)
    assert os.path.isdir(home)


def test_shared_volume_left_mounted_is_a_visible_teardown_error_under_xdist(pytester: pytest.Pytester,
                                                                              home: Path) -> None:
    pytester.makeconftest(SHARED_SUITE)
    pytester.makepyfile(
        """
        from pytest_microsandbox.sync import Sandbox

        LEFT_RUNNING = []

        def test_leaves_it_mounted(shared_volume, msb_run):
            LEFT_RUNNING.append(Sandbox.create(isolation="namespace", home=msb_run.home,
                                               volumes={"/shared": shared_volume.mount()}))

        def test_other(shared_volume):
            assert shared_volume.fs.exists("populated-by.txt")
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", timeout=scaled(180))
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*VolumeInUseError: volume msb-*-shared is attached to active sandbox *"])
    # Once the worker (and with it the sandbox it left running) is gone, the controller removes the volume.
    assert [e.kind for e in Store(home).events() if e.subject.endswith("-shared")] == ["volume.created",
                                                                                          "volume.removed"]
