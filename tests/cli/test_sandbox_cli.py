"""``msb run|create|exec|ps|stop|rm`` with the namespace backend (the vm one is refused here with its reason)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _vmcore.host import detect_kvm
from pytest_microsandbox.cli._main import main
from pytest_microsandbox.sandbox._namespace_backend import namespaces_unavailable

pytestmark = pytest.mark.skipif(namespaces_unavailable() is not None, reason=str(namespaces_unavailable()))


def msb(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_run_with_mount_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("hello")
    home = tmp_path / "home"
    rc = msb(home, "run", "host", "--isolation", "namespace", "--mount-dir", f"{shared}:/in:ro",
             "--tmpfs", "/scratch:size=4", "-e", "WHO=cli", "--", "sh", "-c",
             "cat /in/in.txt; echo \" $WHO\"; touch /in/x 2>/dev/null || echo ro; exit 7")
    out = capsys.readouterr()
    assert rc == 7 and out.out == "hello cli\nro\n"
    assert msb(home, "ps", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []  # msb run removes its sandbox


def test_create_exec_ps_stop_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert msb(home, "create", "host", "--isolation", "namespace", "--name", "kept") == 0
    assert capsys.readouterr().out == "kept\n"
    try:
        assert msb(home, "exec", "kept", "--", "sh", "-c", "echo $((6 * 7)) > /tmp/state") == 0
        assert msb(home, "exec", "kept", "--", "cat", "/tmp/state") == 0  # the same guest, from a new client
        assert capsys.readouterr().out == "42\n"
        assert msb(home, "ps") == 0
        table = capsys.readouterr().out
        assert "kept" in table and "running" in table and "weaker" in table
        assert msb(home, "stop", "kept") == 0
        assert msb(home, "ps", "--format", "json") == 0
        assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["stopped"]
        assert msb(home, "exec", "kept", "--", "true") == 1
        assert "stopped" in capsys.readouterr().err
    finally:
        msb(home, "rm", "kept")
    assert msb(home, "ps", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert msb(home, "run", "host", "--isolation", "namespace") == 1
    assert "no command given" in capsys.readouterr().err
    assert msb(home, "exec", "ghost", "--", "true") == 1
    assert "sandbox not found: ghost" in capsys.readouterr().err
    assert msb(home, "run", "host", "--isolation", "namespace", "--tmpfs", "relative", "--", "true") == 1
    assert "must be absolute" in capsys.readouterr().err
    if not detect_kvm().runs_guest_userspace:
        assert msb(home, "run", "host", "--isolation", "vm", "--", "true") == 1
        err = capsys.readouterr().err
        assert detect_kvm().reason in err and "namespace" in err
