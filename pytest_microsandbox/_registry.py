"""The sandboxes one test's fixtures started: teardown order, failure reports and volume users come from here."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytest_microsandbox.mounts import MountConfig, MountKind
from pytest_microsandbox.sandbox import Sandbox


@dataclass
class StartedSandbox:
    sandbox: Sandbox
    volumes: frozenset[str]  # the named volumes it mounts


@dataclass
class SandboxRegistry:
    started: list[StartedSandbox] = field(default_factory=list)

    def add(self, sandbox: Sandbox, volumes: dict[str, MountConfig]) -> None:
        names = frozenset(c.named for c in volumes.values() if c.kind == MountKind.NAMED and c.named)
        self.started.append(StartedSandbox(sandbox, names))

    def users_of(self, volume: str) -> list[Sandbox]:
        return [s.sandbox for s in self.started if volume in s.volumes]


REGISTRY_KEY = pytest.StashKey[SandboxRegistry]()


def registry_of(item: pytest.Item) -> SandboxRegistry:
    return item.stash.setdefault(REGISTRY_KEY, SandboxRegistry())
