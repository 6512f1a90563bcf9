"""Every volume example of the seed documents runs as written, against our package under the name ``microsandbox``.

Each file in ``seed_examples/`` is a verbatim code block (top-level ``await``), run inside an async function after the
doc page's own import line; the test then checks what the example did.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import pytest_microsandbox
from pytest_microsandbox.sync import Volume

EXAMPLES = Path(__file__).parent / "seed_examples"
PAGE_IMPORT = "from microsandbox import Volume\n"  # the import the doc pages open with


def _pip_cache() -> None:
    Volume.create("pip-cache").fs.write("index.json", b'{"packages": []}')


# What each example needs to exist beforehand (the docs assume it), and what it must have done.
SETUP: dict[str, Callable[[], None]] = {
    "09": _pip_cache, "10": lambda: Volume.create("old-cache"), "17": _pip_cache, "18": _pip_cache,
    "19": _pip_cache, "26": _pip_cache, "27": _pip_cache,
}


def _check_04(ns: dict) -> None:
    assert ns["cache"].name == "pip-cache" and Volume.get("pip-cache").quota_mib is None


def _check_05(ns: dict) -> None:
    assert Volume.get("pip-cache").quota_mib == 1024


def _check_06(ns: dict) -> None:
    handle = Volume.get("docker-data")
    assert handle.kind == "disk" and handle.disk_image.stat().st_size == 20 << 30  # type: ignore[union-attr]


def _check_09(ns: dict) -> None:
    assert Volume.get("pip-cache").fs.read("requirements.txt") == b"requests==2.28.0"


def _check_10(ns: dict) -> None:
    assert [v.name for v in ns["volumes"]] == ["old-cache"]
    assert Volume.list() == []


def _check_both_created(ns: dict) -> None:
    assert Volume.get("pip-cache").quota_mib == 2048
    assert Volume.get("docker-data").size_mib == 20 * 1024


def _check_19(ns: dict) -> None:
    assert Volume.list() == []


def _check_26(ns: dict) -> None:
    assert ns["data"] == b'{"packages": []}'


def _check_27(ns: dict) -> None:
    assert Volume.get("pip-cache").fs.read_text("seed.txt") == "hello"


CHECKS: dict[str, Callable[[dict], None]] = {
    "04": _check_04, "05": _check_05, "06": _check_06, "09": _check_09, "10": _check_10, "15": _check_both_created,
    "16": _check_both_created, "17": lambda ns: None, "18": lambda ns: None, "19": _check_19, "26": _check_26,
    "27": _check_27,
}


def run_example(code: str) -> dict:
    """Run a top-level-await snippet; returns its local variables."""
    body = textwrap.indent(PAGE_IMPORT + code + "\nreturn locals()\n", "    ")
    namespace: dict = {}
    exec(compile(f"async def __example():\n{body}", "<seed example>", "exec"), namespace)
    return asyncio.run(namespace["__example"]())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_seed_example_runs_as_written(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MSB_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "microsandbox", pytest_microsandbox)
    number = path.name[:2]
    assert number in CHECKS, f"{path.name} has no check: say what it must do"
    SETUP.get(number, lambda: None)()
    namespace = run_example(path.read_text())
    CHECKS[number](namespace)
    used = Volume.get("pip-cache").used_bytes if number in ("17", "18") else None
    printed = {"17": f"dir {used}\n", "18": f"pip-cache {used}\n"}  # what the lookups print: kind/name, used_bytes
    assert capsys.readouterr().out == printed.get(number, "")
