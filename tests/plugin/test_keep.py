"""``--msb-keep``: a failed test's sandbox (and the volume it mounts) is left running to be entered afterwards."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_microsandbox.sync import Sandbox, Volume
from tests.homes import home_with_session_templates
from tests.timeouts import scaled

TESTS = """
def test_passes(sandbox):
    assert sandbox.shell("true").exit_code == 0

def test_fails(sandbox_factory, named_volume):
    named_volume.fs.write("evidence.txt", b"look here")
    sb = sandbox_factory(volumes={"/data": named_volume.mount()})
    sb.shell("echo state-before-failure > /root/state")
    assert sb.shell("cat /data/evidence.txt").stdout == "something else"
"""


def run_suite(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    """The suite in its own process: kept sandboxes outlive it, as they would a user's run."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=pytester.path,
                          capture_output=True, text=True, timeout=scaled(180))


def kept_names(output: str) -> list[str]:
    return re.findall(r"^(msb-\S+): msb", output, flags=re.M)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_templates: Path) -> Path:
    path = home_with_session_templates(tmp_path / "home", session_templates)
    monkeypatch.setenv("MSB_HOME", str(path))
    return path


def cleanup(home: Path, names: list[str]) -> None:
    for name in names:
        if "-sb-" in name:
            Sandbox.get(name, home=home).remove()
    for name in names:
        if "-sb-" not in name:
            Volume.remove(name, home=home)


def test_keep_on_failure_leaves_the_failed_tests_sandbox_and_volume(pytester: pytest.Pytester, home: Path,
                                                                    isolation_args: list[str]) -> None:
    pytester.makepyfile(TESTS)
    done = run_suite(pytester, *isolation_args, "--msb-keep=on-failure")
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    kept = kept_names(done.stdout)
    try:
        assert len(kept) == 2 and sum("-sb-" in n for n in kept) == 1, done.stdout
        sandbox_name = next(n for n in kept if "-sb-" in n)
        # MSB_HOME is set, so plain `msb` finds the same home: the line needs no --home
        assert f"{sandbox_name}: msb exec {sandbox_name} -- /bin/sh" in done.stdout
        # The run is over; the failed test's sandbox still holds its state and is entered with msb exec.
        entered = subprocess.run([sys.executable, "-m", "pytest_microsandbox", "exec", sandbox_name, "--",
                                  "cat", "/root/state", "/data/evidence.txt"],
                                 capture_output=True, text=True, timeout=scaled(60))
        assert entered.stdout == "state-before-failure\nlook here", entered.stderr
        running = [s.name for s in Sandbox.list(home=home) if s.status == "running"]
        assert running == [sandbox_name]  # the passing test's sandbox was removed as usual
    finally:
        cleanup(home, kept)


def test_keep_always_keeps_passing_tests_too(pytester: pytest.Pytester, home: Path,
                                             isolation_args: list[str]) -> None:
    pytester.makepyfile("def test_passes(sandbox):\n    assert sandbox.shell('true').exit_code == 0\n")
    done = run_suite(pytester, *isolation_args, "--msb-keep=always")
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    kept = kept_names(done.stdout)
    try:
        assert len(kept) == 1
        assert [s.name for s in Sandbox.list(home=home) if s.status == "running"] == kept
    finally:
        cleanup(home, kept)


@pytest.mark.skipif(__import__("_vmcore.host").host.detect_kvm().runs_guest_userspace,
                    reason="this host runs vm sandboxes")
def test_keep_with_unusable_kvm_still_skips(pytester: pytest.Pytester, home: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile("def test_vm(sandbox):\n    pass\n")
    pytester.runpytest("--msb-keep=always").assert_outcomes(skipped=1)  # the detached path raises the typed error


def test_a_kept_sandbox_keeps_the_shared_volume_it_mounts(pytester: pytest.Pytester, home: Path,
                                                          isolation_args: list[str]) -> None:
    pytester.makepyfile(
        """
        def test_uses_shared(sandbox_factory, shared_volume):
            sb = sandbox_factory(volumes={"/shared": shared_volume.mount()})
            assert sb.shell("echo kept > /shared/note").exit_code == 0
        """
    )
    done = run_suite(pytester, *isolation_args, "--msb-keep=always")
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    kept = kept_names(done.stdout)
    try:
        assert any(n.endswith("-shared") for n in kept) and any("-sb-" in n for n in kept), done.stdout
        assert "microsandbox: the shared volume was kept: volume msb-" in done.stdout
        shared = next(n for n in kept if n.endswith("-shared"))
        assert Volume.get(shared, home=home).fs.read_text("note") == "kept\n"
    finally:
        cleanup(home, kept)
