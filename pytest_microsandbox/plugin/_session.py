"""The plugin's state in one pytest process, one object registered with the plugin manager (as pytest-xdist
registers its ``DSession``): the run's settings and identity, guest coverage, what ``--msb-keep`` left behind, and
what the hooks that use that state do. The hooks themselves stay in the plugin's module, registered with it before
any conftest (an object registered at configure time would run its hooks before the conftests' and wrap theirs);
fixtures reach the state through ``MicrosandboxSession.of(config)``."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from pytest_microsandbox.errors import MicrosandboxError, VolumeInUseError, VolumeNotFoundError
from pytest_microsandbox.host import guest_kernel, kvm_status, msb_home, namespace_limits
from pytest_microsandbox.plugin._coverage import GuestCoverage
from pytest_microsandbox.plugin._options import Settings
from pytest_microsandbox.plugin._reaper import sweep_leftover_volumes
from pytest_microsandbox.plugin._report import sandbox_sections
from pytest_microsandbox.plugin._run import RunContext
from pytest_microsandbox.plugin._started import of_test
from pytest_microsandbox.sandbox import VmOptions, prestart_vmm
from pytest_microsandbox.sync import Volume


class MicrosandboxSession:
    """One pytest process's microsandbox state (see the module's docstring); ``of(config)`` finds it."""

    NAME = "microsandbox-session"

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.run = RunContext.for_config(config, msb_home(settings.home))
        self.coverage = (GuestCoverage.prepare(self.run.home / "coverage" / self.run.run_id, config.rootpath)
                         if settings.cov else None)
        self.kept: list[str] = []  # names of sandboxes and volumes left behind by --msb-keep
        self.shared_kept: str | None = None  # why the shared volume was kept
        self.combined: int | None = None  # guest coverage data files combined at the end
        self._previous_sigterm: Any = None

    @classmethod
    def of(cls, config: pytest.Config) -> MicrosandboxSession:
        return config.pluginmanager.getplugin(cls.NAME)

    def vm_options(self, settings: Settings) -> VmOptions:
        return VmOptions(kernel=settings.kernel or None, snapshots=settings.snapshots,
                         snapshot_keep=settings.snapshot_keep)

    def keeps(self, item: pytest.Item, settings: Settings) -> bool:
        """Whether ``--msb-keep`` leaves this test's sandboxes (and the volumes they mount) running after it."""
        return settings.keep == "always" or (settings.keep == "on-failure" and of_test(item).failed)

    def remember_kept(self, name: str) -> None:
        self.kept.append(name)

    def tear_down_on_sigterm(self) -> None:
        """SIGTERM becomes a KeyboardInterrupt, so pytest runs every teardown as it does on a first Ctrl-C."""

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"received signal {signum}")

        try:
            self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt)
        except ValueError:
            pass  # not the main thread (pytest run inside another program): leave signals alone

    # -- what the plugin's hooks do --------------------------------------------------------------------------------

    def unconfigure(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def configure_node(self, node: Any) -> None:
        """xdist controller: hand each worker this run's id and the controller's identity."""
        node.workerinput["msb_run_id"] = self.run.run_id
        controller = self.run.controller
        node.workerinput["msb_controller"] = (controller.pid, controller.start_ticks, controller.machine)

    def session_start(self) -> None:
        if self.run.is_controller:
            sweep_leftover_volumes(self.run.home)
        # In a process that will run vm sandboxes (not an xdist controller, not --collect-only), start the VMM
        # zygote now: it imports the VMM's code while pytest collects, instead of before the first sandbox.
        distributing = getattr(self.config, "workerinput", None) is None and self.config.getoption("numprocesses",
                                                                                                    None)
        if self.settings.isolation == "vm" and not distributing and not self.config.option.collectonly:
            prestart_vmm()

    def node_down(self, node: Any) -> None:
        """xdist controller: a worker's kept sandboxes and volumes join the controller's summary."""
        self.kept.extend(getattr(node, "workeroutput", {}).get("msb_kept", []))

    def session_finish(self) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["msb_kept"] = list(self.kept)
        if not self.run.is_controller:
            return
        try:
            Volume.remove(self.run.shared_volume_name, home=self.run.home)  # if a worker made one
        except VolumeNotFoundError:
            pass
        except VolumeInUseError as err:  # e.g. a --msb-keep sandbox still mounts it: keep it, and say so
            self.kept.append(self.run.shared_volume_name)
            self.shared_kept = str(err)
        if self.coverage is not None:
            self.combined = self.coverage.combine()

    def terminal_summary(self, terminalreporter: Any) -> None:
        if self.kept:
            home = "" if self.run.home == msb_home(None) else f" --home {self.run.home}"
            terminalreporter.section("microsandbox: kept (--msb-keep)")
            for name in self.kept:
                enter = f"msb{home} exec {name} -- /bin/sh" if "-sb-" in name else f"msb{home} volume inspect {name}"
                terminalreporter.write_line(f"{name}: {enter}")
        if self.shared_kept is not None:
            terminalreporter.write_line(f"microsandbox: the shared volume was kept: {self.shared_kept}", yellow=True)
        if self.combined is not None and self.coverage is not None:
            terminalreporter.write_line(f"microsandbox: combined {self.combined} guest coverage data file(s) into "
                                        f"{self.coverage.data_file}")

    def note_report(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """Keep the phase's report (``--msb-keep=on-failure``); a failed one gets, for each sandbox the test's
        fixtures started, the guest console tail and the last command it ran with that command's output."""
        test = of_test(item)
        test.phase_reports[report.when] = report
        if report.failed:
            for started in test.started:
                report.sections.extend(sandbox_sections(started.sandbox))

    def report_header(self) -> str:
        settings = self.settings
        try:
            kernel = guest_kernel(settings.kernel)
        except MicrosandboxError as err:
            kernel = f"none ({err})"
        header = (f"microsandbox: isolation={settings.isolation}, kvm={kvm_status().kind}, kernel={kernel}, "
                  f"image={settings.image}, home={self.run.home}")
        if settings.isolation == "namespace":
            header += f"\nmicrosandbox: limits: {namespace_limits()}"
        return header
