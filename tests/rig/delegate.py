"""Run this session's ``vm`` tests inside L1 and report each one here, as if it had run here.

Registered by tests/conftest.py on hosts without hardware KVM. After collection the ``vm`` items move to the end of
the run and one L1 boot starts running exactly them (``MSB_REQUIRE_KVM=1`` inside, each test under pytest-timeout),
while this process runs every other test. Each ``vm`` item's turn then replays the reports the inner run wrote for
it (as xdist replays its workers'), so a failing vm test fails by name with the inner traceback, and a test the inner
run never finished fails with L1's console and output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.rig.kernel import RigUnavailable
from tests.rig.l1 import L1Result, L1Run
from tests.timeouts import SCALE_VARIABLE

RIG_TIME_SCALE = float(os.environ.get("MSB_RIG_TIME_SCALE") or 10)
TEST_TIMEOUT = float(os.environ.get("MSB_RIG_TEST_TIMEOUT") or 600)  # pytest-timeout, per test, inside L1
RUN_TIMEOUT = float(os.environ.get("MSB_RIG_TIMEOUT") or 2250)  # every L1 boot of the session together
# No report for this long means L1 itself is stuck (its vCPUs busy, even pytest-timeout never runs): stop that L1,
# boot a fresh one for the tests left, the stuck one included once more; stuck twice, it fails.
STALL_TIMEOUT = TEST_TIMEOUT + 60
# L1 writes its processes to the job folder every 20 s (init.sh): no heartbeat for this long means L1's kernel itself
# is wedged (seen up to twice a CI run under TCG, soon after a nested guest starts: QEMU busy, no process scheduled).
# Don't wait out STALL_TIMEOUT for that.
HEARTBEAT_TIMEOUT = 120
WEDGES_PER_TEST = 3
INNER_MARKER = "MSB_RIG_INNER"
_POLL = 0.5


def wanted(config: pytest.Config) -> str | None:
    """Why the rig is not used for this run, or None when it should be."""
    if os.environ.get(INNER_MARKER):
        return "this run is inside L1"
    if os.environ.get("MSB_RIG", "auto") == "off":
        return "MSB_RIG=off"
    if hasattr(config, "workerinput"):
        return "the nested rig runs vm tests only in a run without xdist (-n)"
    if config.option.collectonly:
        return "collection only"
    return None


class NestedRig:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.delegated: dict[str, pytest.Item] = {}
        self.run: L1Run | None = None
        self.error: str | None = None
        self.reports: dict[str, list[dict[str, Any]]] = {}
        self.finished: set[str] = set()
        self.replayed: list[tuple[str, str, float]] = []
        self.stalls: dict[str, int] = {}
        self.wedges: dict[str, int] = {}
        self.started_at = 0.0
        self.deadline = 0.0
        self._order: list[str] = []
        self._offset = 0
        self._progress_at = 0.0
        self._started_wall = 0.0
        self._result: L1Result | None = None
        self._done = False

    # -- starting ---------------------------------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        vm = [item for item in items if item.get_closest_marker("vm") is not None]
        if not vm:
            return
        self._order = [item.nodeid for item in vm]
        self.started_at = time.monotonic()
        self.deadline = self.started_at + RUN_TIMEOUT
        try:
            self._start(self._order)
        except (RigUnavailable, OSError) as exc:
            self.error = str(exc)
            return
        self.delegated = {item.nodeid: item for item in vm}
        items[:] = [item for item in items if item.nodeid not in self.delegated] + vm

    def _start(self, nodeids: list[str]) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="msb-rig-"))
        reports = workdir / "job" / "reports.jsonl"
        command = [sys.executable, "-m", "pytest", "-p", "tests.rig.inner", f"--rig-reports={reports}",
                   "-p", "no:cacheprovider", f"--timeout={TEST_TIMEOUT:.0f}", "-q", "-rA", "--durations=0", *nodeids]
        # L1's own home: beside the job folder, so only L1's overlay ever holds it. Sharing the host's would show
        # L1 a live run's volumes and records, owned by pids L1 cannot see.
        env = dict(os.environ, MSB_REQUIRE_KVM="1", MSB_HOME=str(workdir / "l1-home"),
                   **{INNER_MARKER: "1", SCALE_VARIABLE: str(RIG_TIME_SCALE)})
        self.run = L1Run(workdir, command, cwd=self.config.rootpath, env=env,
                         timeout=max(0.0, self.deadline - time.monotonic()))
        self.reports_path = reports
        self._offset = 0
        self._progress_at = time.monotonic()
        self._started_wall = time.time()
        self.run.start()

    # -- replaying --------------------------------------------------------------------------------------------------

    def _read_new(self) -> None:
        try:
            with open(self.reports_path, encoding="utf-8") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete, _, _partial = chunk.rpartition("\n")
        if not complete:
            return
        self._offset += len((complete + "\n").encode())
        self._progress_at = time.monotonic()
        for line in complete.splitlines():
            record = json.loads(line)
            if "report" in record:
                self.reports.setdefault(record["report"]["nodeid"], []).append(record["report"])
            elif "finished" in record:
                self.finished.add(record["finished"])

    def _wait_for(self, nodeid: str) -> None:
        assert self.run is not None
        while not self._done:
            self._read_new()
            if nodeid in self.finished:
                return
            if not self.run.running():
                self._result = self.run.wait()
                self._read_new()
                self._done = True
                return
            if time.monotonic() > self.run.deadline:
                self._result = self.run.wait()  # kills L1
                self._read_new()
                self._done = True
                return
            if self._heartbeat_age() > HEARTBEAT_TIMEOUT:
                self._restart_after_stall(wedged=True)
            elif time.monotonic() - self._progress_at > STALL_TIMEOUT:
                self._restart_after_stall(wedged=False)
            time.sleep(_POLL)

    def _heartbeat_age(self) -> float:
        """Seconds since L1 last wrote its heartbeat (or since it started, before the first one)."""
        assert self.run is not None
        try:
            last = (self.run.job / "l1-ps.txt").stat().st_mtime
        except FileNotFoundError:
            last = 0.0
        return time.time() - max(last, self._started_wall)

    def _restart_after_stall(self, *, wedged: bool) -> None:
        """Stop L1 and run the tests left in a fresh one. A test that stalls (no report, L1's kernel alive) gets one
        more try; one during which L1's kernel wedged (no heartbeat: emulated nested KVM, not the test) gets up to
        ``WEDGES_PER_TEST``, within the run's deadline."""
        assert self.run is not None
        self.run.deadline = 0.0
        self._result = self.run.wait()  # kills the stuck L1 (its workdir stays, for its console)
        self._read_new()
        left = [n for n in self._order if n not in self.finished]
        stuck = next((n for n in left if n in self.reports), left[0])  # the one that started (its setup reported)
        counts = self.wedges if wedged else self.stalls
        counts[stuck] = counts.get(stuck, 0) + 1
        for nodeid in left:
            self.reports.pop(nodeid, None)  # a half-run test's setup report is not replayed
        retry = [n for n in left if self.stalls.get(n, 0) < 2 and self.wedges.get(n, 0) < WEDGES_PER_TEST]
        if not retry or time.monotonic() >= self.deadline:
            self._done = True
            return
        self._start(retry)

    def _missing_report(self, item: pytest.Item) -> pytest.TestReport:
        result = self._result
        why = result.describe() if result is not None else "L1 gave no report"
        if self.stalls.get(item.nodeid, 0) >= 2:
            why = f"L1 was stuck in this test twice (no report for {STALL_TIMEOUT:.0f} s each time)\n{why}"
        elif self.wedges.get(item.nodeid, 0) >= WEDGES_PER_TEST:
            why = (f"L1's kernel wedged in this test {WEDGES_PER_TEST} times (no heartbeat for {HEARTBEAT_TIMEOUT} "
                   f"s each time)\n{why}")
        text = f"nested rig: the run inside L1 never finished {item.nodeid}: {why}"
        return pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed", text, "call",
                                 duration=0.0)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> bool | None:
        if item.nodeid not in self.delegated:
            return None
        self._wait_for(item.nodeid)
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = [self.config.hook.pytest_report_from_serializable(config=self.config, data=d)
                   for d in self.reports.get(item.nodeid, [])]
        if item.nodeid not in self.finished:
            reports.append(self._missing_report(item))
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        outcome = next((r.outcome for r in reports if r.failed), None) or \
            next(("xfailed" for r in reports if hasattr(r, "wasxfail")), None) or \
            next((r.outcome for r in reports if r.when == "call"), reports[-1].outcome)
        self.replayed.append((item.nodeid, outcome, sum(r.duration for r in reports)))
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    # -- the end ----------------------------------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error is not None:
            terminalreporter.write_sep("=", "nested rig: not started")
            terminalreporter.write_line(self.error)
        if not self.replayed:
            return
        boot = self.run.boot if self.run is not None else None
        kernel = boot.version if boot is not None else "Debian's linux-image-amd64"
        elapsed = time.monotonic() - self.started_at
        terminalreporter.write_sep(
            "=", f"vm tests run inside L1 (linux {kernel}, QEMU TCG, kvm_amd): {len(self.replayed)} in {elapsed:.0f} s")
        for nodeid, outcome, duration in self.replayed:
            reruns = [f"L1 stuck in it {self.stalls[nodeid]}x" if nodeid in self.stalls else "",
                      f"L1's kernel wedged in it {self.wedges[nodeid]}x" if nodeid in self.wedges else ""]
            stalled = f"; {', '.join(r for r in reruns if r)}, rerun in a fresh L1" if any(reruns) else ""
            terminalreporter.write_line(f"{outcome.upper():8} {nodeid} ({duration:.1f} s in L1{stalled})")
        if any(outcome not in ("passed", "xfailed") for _, outcome, _ in self.replayed) and self.run is not None:
            terminalreporter.write_line(f"L1's console and the inner run's output: {self.run.workdir}")

    def pytest_unconfigure(self) -> None:
        if self.run is None:
            return
        self.run.kill()
        self.run.scratch.unlink(missing_ok=True)
        if self.replayed and all(outcome in ("passed", "xfailed") for _, outcome, _ in self.replayed):
            shutil.rmtree(self.run.workdir, ignore_errors=True)  # kept otherwise: console.log, job/output
