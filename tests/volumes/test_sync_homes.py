"""The sync API resolves ``home`` as ``msb_home`` does, whichever way it is given, with one manager per home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_microsandbox._home import msb_home
from pytest_microsandbox.volumes._volume import _manager


@pytest.mark.parametrize("given", ["abs-str", "abs-path", "relative", "tilde", "env", "env-relative", "default"])
def test_the_manager_is_that_of_the_home_msb_home_resolves(given: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("MSB_HOME", raising=False)
    home: str | os.PathLike[str] | None = {
        "abs-str": str(tmp_path / "a//b/"), "abs-path": tmp_path / "a" / "b", "relative": "rel/home",
        "tilde": "~/h", "env": None, "env-relative": None, "default": None,
    }[given]
    if given == "env":
        monkeypatch.setenv("MSB_HOME", str(tmp_path / "from-env"))
    elif given == "env-relative":
        monkeypatch.setenv("MSB_HOME", "rel-env")
    manager = _manager(home)
    assert manager.home == msb_home(home)
    assert _manager(home) is manager  # cached: it holds nothing but paths
