"""Hooks other plugins and conftest files can implement to extend pytest-microsandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_microsandbox.sync import VolumeHandle


def pytest_microsandbox_sandbox_config(config: pytest.Config, request: pytest.FixtureRequest,
                                       options: dict[str, Any]) -> None:
    """Adjust the options of every sandbox a fixture creates, in place (e.g. add ``volumes`` or ``env``)."""


def pytest_microsandbox_volume_created(volume: VolumeHandle, request: pytest.FixtureRequest) -> None:
    """A volume fixture created ``volume`` for the requesting test (seed it here)."""


def pytest_microsandbox_populate_shared_volume(volume: VolumeHandle, config: pytest.Config) -> None:
    """Fill the run's ``shared_volume``: called once per run, under the cross-worker lock, before any test uses it."""
