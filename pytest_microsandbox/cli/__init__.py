"""The ``msb`` command line."""

from __future__ import annotations

from pytest_microsandbox.cli._main import main

__all__ = ["main"]
