"""What a newcomer hit on the command line (issue 18): ``msb run --help`` explains image references, and the KVM
refusal names this command's opt-in, not pytest's."""

from __future__ import annotations

from pathlib import Path

import pytest

from _vmcore.host import detect_kvm
from pytest_microsandbox.cli._main import main


@pytest.mark.parametrize("command", ["run", "create"])
def test_help_lists_the_image_reference_forms(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for form in ("python:3.12", "localhost:5000/", "oci:DIR", "docker-archive:FILE", "dir:ROOTFS", "host "):
        assert form in out, form


@pytest.mark.skipif(detect_kvm().runs_guest_userspace, reason="this host runs vm sandboxes")
@pytest.mark.parametrize("command", [["run", "host", "--isolation", "vm", "--", "true"],
                                     ["create", "host", "--isolation", "vm"]])
def test_kvm_refusal_names_the_cli_flag(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSB_ISOLATION", raising=False)
    assert main(["--home", str(tmp_path / "home"), *command]) == 1
    err = capsys.readouterr().err
    assert detect_kvm().reason in err
    assert "--isolation namespace" in err
    assert "--msb-isolation" not in err and "isolation='namespace'" not in err
