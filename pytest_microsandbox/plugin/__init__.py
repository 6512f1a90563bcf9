"""pytest entry point (``pytest11: microsandbox``): hooks and registration only. The state the hooks use, and what
they do with it, is ``MicrosandboxSession``'s; the fixtures live in ``_volume_fixtures`` and ``_sandbox_fixtures``."""

from __future__ import annotations

from typing import Any

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


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.pluginmanager.getplugin(MicrosandboxSession.NAME)
    if session is not None:  # None: the run stopped at a usage error, before it had one
        session.unconfigure()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand each worker this run's id and the controller's identity."""
    MicrosandboxSession.of(node.config).configure_node(node)


def pytest_sessionstart(session: pytest.Session) -> None:
    MicrosandboxSession.of(session.config).session_start()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: a worker's kept sandboxes and volumes join the controller's summary."""
    MicrosandboxSession.of(node.config).node_down(node)


@pytest.hookimpl(trylast=True)  # after pytest's own session teardown: no session fixture still uses the volume
def pytest_sessionfinish(session: pytest.Session) -> None:
    MicrosandboxSession.of(session.config).session_finish()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    MicrosandboxSession.of(config).terminal_summary(terminalreporter)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    MicrosandboxSession.of(item.config).note_report(item, report)
    return report


def pytest_report_header(config: pytest.Config) -> str:
    return MicrosandboxSession.of(config).report_header()
