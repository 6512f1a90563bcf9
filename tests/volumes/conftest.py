from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MSB_HOME for the test (the API's default home comes from it)."""
    path = tmp_path / "msb-home"
    monkeypatch.setenv("MSB_HOME", str(path))
    return path
