"""Store records: mounts block volume removal while live, dead sandboxes are reaped, nothing outlives its creator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_microsandbox.cli._main import main as msb_main
from pytest_microsandbox.errors import VolumeInUseError
from pytest_microsandbox.store import ProcessIdentity, Store
from pytest_microsandbox.sync import Sandbox, Volume
from tests.timeouts import scaled

REPO = Path(__file__).resolve().parents[2]


def _wait_dead(pids: list[int], timeout: float = scaled(15)) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.05)
    return alive


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


def test_sandbox_row_and_mount_rows(make_sandbox, home: Path, isolation: str) -> None:
    vol = Volume.create("data", home=home)
    sb = make_sandbox(name="rec", volumes={"/data": vol.handle.mount(readonly=True)}, labels={"msb.run": "run-1"})
    record = Store(home).get_sandbox("rec")
    assert record is not None and record.backend == isolation and record.status == "running"
    assert record.run_id == "run-1" and record.config["volumes"]["/data"]["named"] == "data"
    assert record.owner is not None and record.owner.pid == sb.pid and record.owner.is_alive()
    mounts = Store(home).mounts_of("data")
    assert [(m.sandbox, m.guest_path, m.readonly) for m in mounts] == [("rec", "/data", True)]
    sb.stop()
    assert Store(home).mounts_of("data") == []


def test_remove_while_mounted_fails_then_succeeds_after_stop(make_sandbox, home: Path) -> None:
    vol = Volume.create("busy", home=home)
    sb = make_sandbox(name="holder", volumes={"/busy": vol.handle.mount()})
    with pytest.raises(VolumeInUseError, match="volume busy is attached to active sandbox holder"):
        Volume.remove("busy", home=home)
    sb.stop()
    Volume.remove("busy", home=home)
    assert Volume.list(home=home) == []


def test_sigkilled_sandbox_is_reaped_by_the_next_call(make_sandbox, home: Path) -> None:
    vol = Volume.create("orphaned", home=home)
    sb = make_sandbox(name="victim", volumes={"/v": vol.handle.mount()})
    os.kill(sb.pid, signal.SIGKILL)
    assert _wait_dead([sb.pid]) == []
    Volume.remove("orphaned", home=home)  # the dead guest's mount record does not block it
    assert [(r.name, r.status) for r in Sandbox.list(home=home)] == [("victim", "exited")]
    assert not (home / "run" / "victim").exists()


_LEAKER = textwrap.dedent("""
    import json, os, signal, sys
    from pytest_microsandbox.sync import Sandbox, Volume
    home, out = sys.argv[1], sys.argv[2]
    vol = Volume.create("shared", home=home)
    sandboxes = [Sandbox.create(isolation="namespace", home=home, volumes={"/v": vol.handle.mount()})
                 for _ in range(20)]
    pids = []
    for sb in sandboxes:
        pids.append(sb.pid)
        pids += [int(c) for t in os.listdir(f"/proc/{sb.pid}/task")
                 for c in open(f"/proc/{sb.pid}/task/{t}/children").read().split()]
    json.dump(pids, open(out, "w"))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_leak_twenty_sandboxes_creator_sigkilled(home: Path, tmp_path: Path, capsys) -> None:
    pids_file = tmp_path / "pids.json"
    proc = subprocess.run([sys.executable, "-c", _LEAKER, str(home), str(pids_file)], cwd=REPO, timeout=scaled(120),
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    pids = json.loads(pids_file.read_text())
    assert len(pids) == 40  # 20 launchers and their 20 agents (PID 1 of each namespace)
    assert _wait_dead(pids) == []
    assert msb_main(["--home", str(home), "ps"]) == 0
    shown = capsys.readouterr().out
    assert "running" not in shown and shown.count("exited") == 20
    assert {r.status for r in Sandbox.list(home=home)} == {"exited"}
    Volume.remove("shared", home=home)  # no live mount is left to block it
    owner_alive = [r.owner.pid for r in Store(home).list_sandboxes() if r.owner and r.owner.is_alive()]
    assert owner_alive == []
    assert ProcessIdentity.current().is_alive()


def test_stop_from_another_process_handle(make_sandbox, home: Path) -> None:
    """A handle from Sandbox.get in a process that does not own the guest stops it by its recorded process."""
    sb = make_sandbox(name="far")
    script = ("import sys; from pytest_microsandbox.sync import Sandbox; "
              f"Sandbox.get('far', home=sys.argv[1]).stop(timeout={scaled(5)})")
    subprocess.run([sys.executable, "-c", script, str(home)], cwd=REPO, check=True, timeout=scaled(60),
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert _wait_dead([sb.pid]) == []
    assert Store(home).get_sandbox("far").status == "stopped"


def test_boot_failure_reports_the_console(home: Path, tmp_path: Path) -> None:
    from pytest_microsandbox.errors import BootError
    from pytest_microsandbox.sandbox._ns_hostmounts import loop_mounts_unavailable

    if loop_mounts_unavailable():
        pytest.skip(loop_mounts_unavailable())
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * (1 << 20))  # no filesystem on it: the loop mount fails before the guest starts
    with pytest.raises(BootError) as info:
        Sandbox.create(isolation="namespace", home=home, volumes={"/d": Volume.disk(junk, readonly=True)})
    assert "mount" in info.value.console_tail
    assert Sandbox.list(home=home) == []


def test_a_sandbox_of_another_machine_sharing_the_home_is_neither_reaped_nor_signalled(home: Path) -> None:
    """Its pid belongs to another machine: here it may name any process at all (this test's own, below)."""
    from pytest_microsandbox.errors import SandboxError
    from pytest_microsandbox.store import HostIdentity, SandboxRecord

    here = HostIdentity.current()
    bystander = subprocess.Popen(["sleep", "60"])  # the pid the other machine's record happens to hold
    try:
        elsewhere = ProcessIdentity(bystander.pid, 1, str(HostIdentity("another-host", "0" * 32, here.pid_namespace)))
        Store(home).add_sandbox(SandboxRecord(name="theirs", backend="vm", owner=elsewhere, status="running"))
        handle = Sandbox.get("theirs", home=home)
        assert handle.status == "running"  # not reaped as dead
        for end in (handle.stop, handle.kill, handle.remove):
            with pytest.raises(SandboxError, match="another machine"):
                end()
        assert bystander.poll() is None
        assert [s.name for s in Sandbox.list(home=home)] == ["theirs"]
    finally:
        bystander.kill()
        bystander.wait()
