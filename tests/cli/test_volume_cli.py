"""``msb volume``: the commands a user types, through ``main`` and through the installed ``msb`` script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_microsandbox.cli import main
from pytest_microsandbox.sync import Volume


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_ls_inspect_rm(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "volume", "create", "pip-cache", "--quota", "1G", "--label", "team=ci") == (0, "pip-cache\n", "")
    assert run(capsys, "volume", "create", "scratch", "--kind", "disk", "--size", "20M")[0] == 0
    code, out, _ = run(capsys, "volume", "ls")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "KIND", "QUOTA", "SIZE", "USED", "CREATED"]
    assert lines[1].split()[:4] == ["pip-cache", "dir", "1024M", "-"]
    assert lines[2].split()[:4] == ["scratch", "disk", "-", "20M"]
    assert run(capsys, "volume", "ls", "-q")[1] == "pip-cache\nscratch\n"
    code, out, _ = run(capsys, "volume", "inspect", "pip-cache")
    [info] = json.loads(out)
    assert info["labels"] == {"team": "ci"} and info["quota_mib"] == 1024 and info["kind"] == "dir"
    assert info["path"] == str(home / "volumes" / "pip-cache")
    assert run(capsys, "volume", "rm", "pip-cache", "scratch")[1] == "pip-cache\nscratch\n"
    assert Volume.list() == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["volume", "create", "x", "--size", "1.5G", "--kind", "disk"], "invalid --size"),
        (["volume", "create", "x", "--kind", "disk"], "needs size_mib"),
        (["volume", "create", "x", "--label", "novalue"], "expected KEY=VALUE"),
        (["volume", "create", "x", "--label", "a=1", "--label", "a=2"], "more than once"),
        (["volume", "create", "-bad"], None),
        (["volume", "rm", "missing"], "volume not found: missing"),
        (["volume", "inspect", "missing"], "volume not found: missing"),
    ],
)
def test_errors_exit_non_zero_with_a_message(home: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                             message: str | None) -> None:
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as exit_:  # argparse refuses an option-like name itself
        code, err = int(exit_.code or 0), capsys.readouterr().err
    assert code != 0
    if message:
        assert message in err
    assert Volume.list() == []


def test_create_twice_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "volume", "create", "v")
    code, _, err = run(capsys, "volume", "create", "v")
    assert code == 1 and "msb: error: volume already exists: v" in err


MSB_SCRIPT = Path(sys.executable).parent / "msb"


@pytest.mark.skipif(not MSB_SCRIPT.exists(), reason="the msb console script is not installed (pip install -e .)")
def test_installed_console_script(home: Path) -> None:
    # The microsandbox wheel (our [kernel] extra) ships an `msb` script too; installing us last must leave ours.
    assert "pytest_microsandbox" in MSB_SCRIPT.read_text(), f"{MSB_SCRIPT} is not pytest-microsandbox's msb"
    done = subprocess.run([str(MSB_SCRIPT), "volume", "create", "from-script"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert [h.name for h in Volume.list()] == ["from-script"]
    doctor = subprocess.run([str(MSB_SCRIPT), "doctor"], capture_output=True, text=True, timeout=60)
    assert doctor.returncode == 0 and "kvm:" in doctor.stdout


def test_volume_mount_serves_the_volume_with_its_quota(home: Path, tmp_path: Path) -> None:
    import errno
    import os
    import signal
    import sys

    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("FUSE mounts unavailable here: /dev/fuse is not readable and writable by this user")

    volume = Volume.create("quota-mounted", quota_mib=1)
    volume.fs.write("hello.txt", b"from the volume")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pytest_microsandbox", "volume", "mount", "quota-mounted",
                             str(mountpoint)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("mounted quota-mounted on"), proc.stderr.read()
        assert (mountpoint / "hello.txt").read_bytes() == b"from the volume"
        (mountpoint / "new.txt").write_bytes(b"x" * 1000)
        assert volume.fs.read("new.txt") == b"x" * 1000  # writes land in the volume itself
        with pytest.raises(OSError) as full, open(mountpoint / "big.bin", "wb") as f:
            f.write(b"\0" * (2 << 20))
            f.flush()
            os.fsync(f.fileno())
        assert full.value.errno == errno.ENOSPC  # the quota holds through the mount
        refused = subprocess.run([sys.executable, "-m", "pytest_microsandbox", "volume", "rm", "quota-mounted"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "is attached to active sandbox msb-volume-mount-" in refused.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not os.path.ismount(mountpoint)
    Volume.remove("quota-mounted")  # served no longer: removal goes through
