"""The ``sandbox`` and ``sandbox_factory`` fixtures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from pytest_microsandbox._coverage import GuestCoverage
from pytest_microsandbox._options import Settings, marker_factory_options
from pytest_microsandbox._registry import registry_of
from pytest_microsandbox._run import RunContext
from pytest_microsandbox.errors import KvmUnavailableError
from pytest_microsandbox.sandbox import Sandbox
from pytest_microsandbox.sandbox._detached import start_detached

SandboxFactory = Callable[..., Sandbox]
COVERAGE_KEY = pytest.StashKey[GuestCoverage]()
PHASE_REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
KEPT_KEY = pytest.StashKey[list[str]]()  # names of sandboxes and volumes left behind by --msb-keep


def keeps(item: pytest.Item, settings: Settings) -> bool:
    """Whether ``--msb-keep`` leaves this test's sandboxes (and the volumes they mount) running after it."""
    failed = any(r.failed for r in item.stash.get(PHASE_REPORTS_KEY, {}).values())
    return settings.keep == "always" or (settings.keep == "on-failure" and failed)


def remember_kept(config: pytest.Config, name: str) -> None:
    config.stash.setdefault(KEPT_KEY, []).append(name)


@pytest.fixture
def sandbox_factory(request: pytest.FixtureRequest, msb_sandbox_settings: Settings,
                    msb_run: RunContext) -> Iterator[SandboxFactory]:
    """Start sandboxes for this test: ``sandbox_factory(volumes={...}, env={...})``; keyword arguments override the
    run's settings and the test's ``sandbox`` marker (a keyword given to both takes the factory's value whole).
    Each is stopped and removed at teardown (see ``--msb-keep``)."""
    registry = registry_of(request.node)
    marked = marker_factory_options(request.node.get_closest_marker("sandbox"))
    mine: list[Sandbox] = []

    def make(**overrides: Any) -> Sandbox:
        settings = msb_sandbox_settings
        options: dict[str, Any] = {
            "name": msb_run.next_name("sb"),
            "image": settings.image,
            "memory_mib": settings.memory,
            "cpus": settings.cpus,
            "isolation": settings.isolation,
            "boot_timeout": settings.boot_timeout,
            "volumes": {},
            "env": {},
            "home": msb_run.home,
        }
        # Copies of the marker's dicts: a hook may change its sandbox's env or volumes, never the next one's.
        options.update({k: dict(v) if isinstance(v, Mapping) else v for k, v in marked.items()})
        options.update(overrides)
        options["labels"] = {**dict(options.get("labels") or {}), **msb_run.labels("sandbox")}
        request.config.hook.pytest_microsandbox_sandbox_config(config=request.config, request=request,
                                                                options=options)
        guest_coverage = request.config.stash.get(COVERAGE_KEY, None)
        if guest_coverage is not None and options["image"] == "host":
            guest_coverage.apply(options)
        try:
            if settings.keep == "never":
                sandbox = Sandbox.create(**options)
            else:  # it may have to outlive this run: an owner process of its own holds it
                home = options.pop("home")
                sandbox = Sandbox.get(start_detached(home, options), home=home)
        except KvmUnavailableError as err:
            if settings.if_unavailable == "fail":
                pytest.fail(f"microsandbox: {err}", pytrace=False)
            pytest.skip(f"microsandbox: {err}")
        registry.add(sandbox, dict(options["volumes"]))
        mine.append(sandbox)
        return sandbox

    yield make
    kept = keeps(request.node, msb_sandbox_settings)
    with contextlib.ExitStack() as teardown:  # every sandbox is handled, even when one of them fails to stop
        for sandbox in mine:
            if kept:
                remember_kept(request.config, sandbox.name)
                teardown.callback(sandbox.close)
            else:
                teardown.callback(sandbox.remove)


@pytest.fixture
def sandbox(sandbox_factory: SandboxFactory) -> Sandbox:
    """A fresh sandbox for this test (image, memory, cpus, isolation from the marker, CLI, env or ini)."""
    return sandbox_factory()
