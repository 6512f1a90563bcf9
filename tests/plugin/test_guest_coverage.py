"""``--msb-cov``: Python that runs only inside a sandbox shows up in the host's coverage data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import coverage
import pytest


def test_code_run_only_in_the_sandbox_is_measured(pytester: pytest.Pytester, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSB_HOME", str(tmp_path / "home"))
    pytester.makepyfile(
        guestonly="""
        def branchy(n):
            if n > 0:
                return "positive"
            return "not positive"

        if __name__ == "__main__":
            print(branchy(5))
        """,
        test_cov="""
        def test_runs_in_guest(sandbox):
            r = sandbox.exec("python3", "-m", "guestonly")
            assert r.stdout == "positive\\n", r.stderr
        """,
    )
    (pytester.path / ".coveragerc").write_text("[run]\nbranch = True\n")  # the host's own settings
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--msb-cov",
                           "--msb-isolation=namespace", "test_cov.py"], cwd=pytester.path, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "microsandbox: combined 1 guest coverage data file(s) into" in done.stdout
    data = coverage.CoverageData(basename=str(pytester.path / ".coverage"))
    data.read()
    measured = {Path(f).name: f for f in data.measured_files()}
    assert "guestonly.py" in measured, sorted(measured)
    lines = data.lines(measured["guestonly.py"]) or []
    assert set(lines) == {1, 2, 3, 6, 7}  # line 4, the negative branch, never ran
    assert data.has_arcs()  # branch data, as the host's settings ask
    assert not (tmp_path / "home" / "coverage").exists() or not any((tmp_path / "home" / "coverage").iterdir())
