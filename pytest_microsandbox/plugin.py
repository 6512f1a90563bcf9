"""pytest entry point (``pytest11: microsandbox``): hooks and registration only."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(**options): options for the sandbox fixture of this test")
