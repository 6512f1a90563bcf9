"""pytest entry point (``pytest11: microsandbox``): hooks and registration only."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from _vmcore.errors import KernelLoadError
from _vmcore.host import detect_kvm
from _vmcore.kernels import find_kernel
from pytest_microsandbox import _options, fixtures, hookspecs, sandbox_fixtures
from pytest_microsandbox._coverage import GuestCoverage
from pytest_microsandbox._home import msb_home
from pytest_microsandbox._reaper import sweep_leftover_volumes
from pytest_microsandbox._registry import REGISTRY_KEY
from pytest_microsandbox._report import sandbox_sections
from pytest_microsandbox._run import RunContext
from pytest_microsandbox.errors import VolumeInUseError
from pytest_microsandbox.fixtures import RUN_KEY, SETTINGS_KEY
from pytest_microsandbox.sandbox_fixtures import COVERAGE_KEY, KEPT_KEY, PHASE_REPORTS_KEY

COMBINED_KEY = pytest.StashKey[int]()
SHARED_KEPT_KEY = pytest.StashKey[str]()

_SIGTERM_KEY = pytest.StashKey[Any]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.register(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(**options): options for this test's sandboxes: any keyword of "
                            f"sandbox_factory or per-test setting ({', '.join(_options.MARKER_KEYS)})")
    settings = _options.resolve(config)
    config.stash[SETTINGS_KEY] = settings
    # The vm backend reads these from the environment (so do sandboxes made outside pytest); the option and ini
    # key win over what the environment had, which comes back at the end of the run.
    if settings.kernel:
        _export_env(config, "MSB_KERNEL", settings.kernel)
    _export_env(config, "MSB_SNAPSHOTS", "true" if settings.snapshots else "false")
    _export_env(config, "MSB_SNAPSHOT_KEEP", str(settings.snapshot_keep))
    config.stash[RUN_KEY] = RunContext.for_config(config, msb_home(settings.home))
    if settings.cov:
        run = config.stash[RUN_KEY]
        config.stash[COVERAGE_KEY] = GuestCoverage.prepare(run.home / "coverage" / run.run_id, config.rootpath)
    config.pluginmanager.register(fixtures, "microsandbox-fixtures")
    config.pluginmanager.register(sandbox_fixtures, "microsandbox-sandbox-fixtures")
    _tear_down_on_sigterm(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(_SIGTERM_KEY, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _export_env(config: pytest.Config, name: str, value: str) -> None:
    previous = os.environ.get(name)
    os.environ[name] = value
    config.add_cleanup(lambda: _restore_env(name, previous))


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _tear_down_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM becomes a KeyboardInterrupt, so pytest runs every teardown as it does on a first Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    try:
        config.stash[_SIGTERM_KEY] = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        pass  # not the main thread (pytest run inside another program): leave signals alone


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand each worker this run's id and the controller's identity."""
    run = node.config.stash[RUN_KEY]
    node.workerinput["msb_run_id"] = run.run_id
    node.workerinput["msb_controller"] = (run.controller.pid, run.controller.start_ticks, run.controller.machine)


def pytest_sessionstart(session: pytest.Session) -> None:
    run = session.config.stash[RUN_KEY]
    if run.is_controller:
        sweep_leftover_volumes(run.home)
    _start_vmm_zygote(session.config)


def _start_vmm_zygote(config: pytest.Config) -> None:
    """In a process that will run vm sandboxes (not an xdist controller, not --collect-only), start the VMM zygote
    now: it imports the VMM's code while pytest collects, instead of before the first sandbox."""
    distributing = getattr(config, "workerinput", None) is None and config.getoption("numprocesses", None)
    if config.stash[SETTINGS_KEY].isolation != "vm" or distributing or config.option.collectonly:
        return
    if detect_kvm().runs_guest_userspace:
        from pytest_microsandbox.sandbox._zygote_client import zygote

        zygote()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: a worker's kept sandboxes and volumes join the controller's summary."""
    kept = getattr(node, "workeroutput", {}).get("msb_kept", [])
    node.config.stash.setdefault(KEPT_KEY, []).extend(kept)


@pytest.hookimpl(trylast=True)  # after pytest's own session teardown: no session fixture still uses the volume
def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash[RUN_KEY]
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["msb_kept"] = list(session.config.stash.get(KEPT_KEY, []))
    if run.is_controller:
        try:
            fixtures.remove_shared_volume(run)
        except VolumeInUseError as err:  # e.g. a --msb-keep sandbox still mounts it: keep it, and say so
            session.config.stash.setdefault(KEPT_KEY, []).append(run.shared_volume_name)
            session.config.stash[SHARED_KEPT_KEY] = str(err)
        guest_coverage = session.config.stash.get(COVERAGE_KEY, None)
        if guest_coverage is not None:
            session.config.stash[COMBINED_KEY] = guest_coverage.combine()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(KEPT_KEY, [])
    if kept:
        run = config.stash[RUN_KEY]
        home = "" if run.home == msb_home(None) else f" --home {run.home}"
        terminalreporter.section("microsandbox: kept (--msb-keep)")
        for name in kept:
            enter = f"msb{home} exec {name} -- /bin/sh" if "-sb-" in name else f"msb{home} volume inspect {name}"
            terminalreporter.write_line(f"{name}: {enter}")
    shared_kept = config.stash.get(SHARED_KEPT_KEY, None)
    if shared_kept is not None:
        terminalreporter.write_line(f"microsandbox: the shared volume was kept: {shared_kept}", yellow=True)
    combined = config.stash.get(COMBINED_KEY, None)
    if combined is not None:
        data_file = config.stash[COVERAGE_KEY].data_file
        terminalreporter.write_line(f"microsandbox: combined {combined} guest coverage data file(s) into {data_file}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report gets, for each sandbox its fixtures started, the guest console tail and the last
    command it ran with that command's output."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS_KEY, {})[report.when] = report
    registry = item.stash.get(REGISTRY_KEY, None)
    if report.failed and registry is not None:
        for started in registry.started:
            for title, text in sandbox_sections(started.sandbox):
                report.sections.append((title, text))
    return report


def pytest_report_header(config: pytest.Config) -> str:
    settings = config.stash[SETTINGS_KEY]
    run = config.stash[RUN_KEY]
    try:
        kernel = str(find_kernel(settings.kernel))
    except KernelLoadError as err:
        kernel = f"none ({err})"
    header = (f"microsandbox: isolation={settings.isolation}, kvm={detect_kvm().kind}, kernel={kernel}, "
              f"image={settings.image}, home={run.home}")
    if settings.isolation == "namespace":
        from pytest_microsandbox.sandbox._namespace import namespace_limits

        header += f"\nmicrosandbox: limits: {namespace_limits()}"
    return header
