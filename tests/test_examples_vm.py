"""The user-facing example suites (examples/) run as written with ``--msb-isolation=vm``: real microVMs, one run per
example folder, every test passing and none skipped. Elsewhere in this suite they run as namespace sandboxes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timeouts import BOOT, scaled

REPO = Path(__file__).resolve().parents[1]
# What keeps an example from passing in a vm today, and why (each is tracked, none is silent).
KNOWN = {
    "grading": pytest.mark.xfail(strict=False, reason="the vandal solution walks all of /usr over virtio-fs: past the "
                                 "example's time limit when the machine is emulated (the nested rig is 10-50x slower)"),
}
EXAMPLES = [pytest.param(name, marks=KNOWN.get(name, ()))
            for name in sorted({p.parent.name for p in (REPO / "examples").glob("*/test_*.py")})]


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for every example: the snapshot template is built once and restored by all of them."""
    return tmp_path_factory.mktemp("examples-home")


@pytest.mark.vm
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_suite_passes_in_microvms(example: str, shared_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MSB_ISOLATION"))}
    env.update(MSB_HOME=str(shared_home), CI="true")  # CI: an unusable vm backend fails instead of skipping
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"examples/{example}",
                           "--msb-isolation=vm", f"--msb-boot-timeout={BOOT:g}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=scaled(600))
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and not re.search(r"skipped|failed|error", summary), summary
