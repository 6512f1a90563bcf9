"""What the plugin knows of one test: the sandboxes its fixtures started (teardown order, failure reports and volume
users come from here) and the reports of its phases so far (``--msb-keep=on-failure``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytest_microsandbox.mounts import MountConfig, MountKind
from pytest_microsandbox.sync import Sandbox


@dataclass
class StartedSandbox:
    sandbox: Sandbox
    volumes: frozenset[str]  # the named volumes it mounts


@dataclass
class TestSandboxes:
    __test__ = False  # not a test class, whatever its name

    started: list[StartedSandbox] = field(default_factory=list)
    phase_reports: dict[str, pytest.TestReport] = field(default_factory=dict)  # by ``report.when``

    def add(self, sandbox: Sandbox, volumes: dict[str, MountConfig]) -> None:
        names = frozenset(c.named for c in volumes.values() if c.kind == MountKind.NAMED and c.named)
        self.started.append(StartedSandbox(sandbox, names))

    def users_of(self, volume: str) -> list[Sandbox]:
        return [s.sandbox for s in self.started if volume in s.volumes]

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.phase_reports.values())


_KEY = pytest.StashKey[TestSandboxes]()


def of_test(item: pytest.Item) -> TestSandboxes:
    """The test's record, made on first use."""
    return item.stash.setdefault(_KEY, TestSandboxes())
