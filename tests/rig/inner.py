"""The pytest plugin the run inside L1 loads (``-p tests.rig.inner --rig-reports=FILE``): every test report, as
pytest serialises it for xdist, one JSON line each, written through to the host as soon as it exists."""

from __future__ import annotations

import json
from typing import IO

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rig-reports", default=None, help="nested rig: append each report to this file as JSON lines")


class ReportLog:
    def __init__(self, config: pytest.Config, stream: IO[str]) -> None:
        self.config = config
        self.stream = stream

    def _write(self, record: dict[str, object]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._write({"report": self.config.hook.pytest_report_to_serializable(config=self.config, report=report)})

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._write({"finished": nodeid})

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._write({"collect_error": report.nodeid, "text": str(report.longrepr)})

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self._write({"done": int(exitstatus)})


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("rig_reports")
    if path:
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole session
        config.add_cleanup(stream.close)
        config.pluginmanager.register(ReportLog(config, stream), "rig-report-log")
