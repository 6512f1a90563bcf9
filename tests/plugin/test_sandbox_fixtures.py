"""The sandbox fixtures, end to end under both backends (``isolation_args``: vm runs where KVM runs guests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox.store import Store
from pytest_microsandbox.sync import Volume
from tests.homes import home_with_session_templates


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_templates: Path) -> Path:
    path = home_with_session_templates(tmp_path / "home", session_templates)
    monkeypatch.setenv("MSB_HOME", str(path))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MSB_ISOLATION", raising=False)
    return path


def assert_nothing_left(home: Path) -> None:
    assert Volume.list(home=home) == []
    assert [s.name for s in Store(home).list_sandboxes() if s.status == "running"] == []


def test_sandbox_runs_commands(pytester: pytest.Pytester, home: Path, isolation_args: list[str]) -> None:
    pytester.makepyfile(
        """
        def test_untrusted(sandbox):
            r = sandbox.exec("python3", "-c", "print(2 + 2)")
            assert r.exit_code == 0 and r.stdout == "4\\n"
            assert sandbox.shell("echo $((6 * 7))").stdout == "42\\n"
        """
    )
    pytester.runpytest(*isolation_args).assert_outcomes(passed=1)
    assert_nothing_left(home)


def test_sandbox_with_named_volume_and_tmpfs(pytester: pytest.Pytester, home: Path, isolation_args: list[str]) -> None:
    """DESIGN.md §1's example: the sandbox is torn down before the volume it mounts, whatever the fixture order."""
    pytester.makepyfile(
        """
        def test_cache(sandbox_factory, named_volume, tmpfs_mount):
            named_volume.fs.write("seed.txt", b"hello")
            sb = sandbox_factory(volumes={"/data": named_volume.mount(readonly=True),
                                          "/scratch": tmpfs_mount(size_mib=64)})
            assert sb.shell("cat /data/seed.txt").stdout == "hello"
            assert sb.shell("touch /data/new").exit_code != 0
            assert sb.shell("echo x > /scratch/f && cat /scratch/f").stdout == "x\\n"

        def test_writes_reach_the_host(sandbox_factory, named_volume):
            sb = sandbox_factory(volumes={"/data": named_volume.mount()})
            assert sb.shell("echo from-guest > /data/out.txt").exit_code == 0
            assert named_volume.fs.read_text("out.txt") == "from-guest\\n"
        """
    )
    pytester.runpytest(*isolation_args).assert_outcomes(passed=2)
    assert_nothing_left(home)


def test_failed_test_reports_console_and_last_exec(pytester: pytest.Pytester, home: Path,
                                                   isolation_args: list[str]) -> None:
    pytester.makepyfile(
        """
        def test_grader(sandbox):
            r = sandbox.shell("echo partial-output; echo oops >&2; exit 3")
            assert r.exit_code == 0
        """
    )
    result = pytester.runpytest(*isolation_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*- microsandbox msb-*-main-sb-1: console tail -*",
        "*- microsandbox msb-*-main-sb-1: last exec -*",
        "$ /bin/sh -c 'echo partial-output; echo oops >&2; exit 3'",
        "exit code 3",
        "*- microsandbox msb-*-main-sb-1: last exec stdout -*",
        "partial-output",
        "*- microsandbox msb-*-main-sb-1: last exec stderr -*",
        "oops",
    ])
    assert_nothing_left(home)


def test_marker_chooses_isolation(pytester: pytest.Pytester, home: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.sandbox(isolation="namespace")
        def test_marked(sandbox):
            assert sandbox.isolation == "namespace"
        """
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_hook_adds_env_to_every_sandbox(pytester: pytest.Pytester, home: Path, isolation_args: list[str]) -> None:
    pytester.makeconftest(
        """
        def pytest_microsandbox_sandbox_config(config, request, options):
            options["env"] = {**options["env"], "FROM_HOOK": request.node.name}
        """
    )
    pytester.makepyfile(
        """
        def test_env(sandbox):
            assert sandbox.shell("echo $FROM_HOOK").stdout == "test_env\\n"
        """
    )
    pytester.runpytest(*isolation_args).assert_outcomes(passed=1)


@pytest.mark.skipif(__import__("_vmcore.host").host.detect_kvm().runs_guest_userspace,
                    reason="this host runs vm sandboxes")
def test_unusable_kvm_skips_by_default_and_fails_on_ci(pytester: pytest.Pytester, home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from _vmcore.host import detect_kvm

    pytester.makepyfile("def test_vm(sandbox):\n    pass\n")
    skipped = pytester.runpytest("-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines([f"*microsandbox: *{detect_kvm().kind}*namespace*"])
    monkeypatch.setenv("CI", "true")
    failed = pytester.runpytest()
    failed.assert_outcomes(errors=1)  # the sandbox fixture fails in setup: an error, never a silent pass
    failed.stdout.fnmatch_lines([f"*microsandbox: *{detect_kvm().reason}*"])
    pytester.runpytest("--msb-if-unavailable=skip").assert_outcomes(skipped=1)  # an explicit choice beats CI
