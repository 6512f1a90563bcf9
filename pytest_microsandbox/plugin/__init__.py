"""pytest entry point (``pytest11: microsandbox``): registration only. The hooks that keep state are methods of
``MicrosandboxSession``; the fixtures live in ``_volume_fixtures`` and ``_sandbox_fixtures``."""

from __future__ import annotations

import pytest

from pytest_microsandbox.plugin import _options, _sandbox_fixtures, _volume_fixtures, hookspecs
from pytest_microsandbox.plugin._session import MicrosandboxSession


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.register(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(**options): options for this test's sandboxes: any keyword of "
                            f"sandbox_factory or per-test setting ({', '.join(_options.MARKER_KEYS)})")
    session = MicrosandboxSession(config, _options.resolve(config))
    config.pluginmanager.register(session, MicrosandboxSession.NAME)
    config.pluginmanager.register(_volume_fixtures, "microsandbox-fixtures")
    config.pluginmanager.register(_sandbox_fixtures, "microsandbox-sandbox-fixtures")
    session.tear_down_on_sigterm()
