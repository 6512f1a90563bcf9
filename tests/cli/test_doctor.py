from __future__ import annotations

import argparse

from pytest_microsandbox.cli import doctor


def test_doctor_reports_kvm_and_kernel(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MSB_KERNEL", raising=False)
    assert doctor.run(argparse.Namespace(home=str(tmp_path), kernel=None)) == 0
    out = capsys.readouterr().out
    assert out.startswith("kvm:")
    kernel_line = next(line for line in out.splitlines() if line.startswith("kernel:"))
    assert "libkrunfw.so." in kernel_line


def test_doctor_names_a_missing_kernel(tmp_path, capsys):
    doctor.run(argparse.Namespace(home=str(tmp_path), kernel=str(tmp_path / "missing")))
    assert "kernel: none" in capsys.readouterr().out


def test_doctor_says_whether_namespace_sandboxes_get_limits(tmp_path, capsys):
    from pytest_microsandbox.sandbox._namespace_backend import limits_unavailable

    doctor.run(argparse.Namespace(home=str(tmp_path), kernel=None))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("limits:"))
    reason = limits_unavailable()
    assert (f"NONE for namespace sandboxes: {reason}" in line) if reason else "cgroups of their own" in line
