"""The ``sandbox`` and ``sandbox_factory`` fixtures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from pytest_microsandbox.errors import KvmUnavailableError
from pytest_microsandbox.plugin._options import Settings, marker_factory_options
from pytest_microsandbox.plugin._run import RunContext
from pytest_microsandbox.plugin._session import MicrosandboxSession
from pytest_microsandbox.plugin._started import of_test
from pytest_microsandbox.sandbox import VmOptions, start_detached
from pytest_microsandbox.sync import Sandbox

SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def msb_vm_options(request: pytest.FixtureRequest, msb_sandbox_settings: Settings) -> VmOptions:
    """This test's settings of the vm backend (``--msb-kernel``, ``--msb-snapshots``, ``--msb-snapshot-keep``):
    ``Sandbox.create(..., vm=msb_vm_options)`` starts a sandbox of your own as the fixtures start theirs."""
    return MicrosandboxSession.of(request.config).vm_options(msb_sandbox_settings)


@pytest.fixture
def sandbox_factory(request: pytest.FixtureRequest, msb_sandbox_settings: Settings, msb_run: RunContext,
                    msb_vm_options: VmOptions) -> Iterator[SandboxFactory]:
    """Start sandboxes for this test: ``sandbox_factory(volumes={...}, env={...})``; keyword arguments override the
    run's settings and the test's ``sandbox`` marker (a keyword given to both takes the factory's value whole).
    Each is stopped and removed at teardown (see ``--msb-keep``)."""
    test, session = of_test(request.node), MicrosandboxSession.of(request.config)
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
            "vm": msb_vm_options,
        }
        # Copies of the marker's dicts: a hook may change its sandbox's env or volumes, never the next one's.
        options.update({k: dict(v) if isinstance(v, Mapping) else v for k, v in marked.items()})
        options.update(overrides)
        options["labels"] = {**dict(options.get("labels") or {}), **msb_run.labels("sandbox")}
        request.config.hook.pytest_microsandbox_sandbox_config(config=request.config, request=request,
                                                                options=options)
        if session.coverage is not None and _is_host_image(options["image"]):
            session.coverage.apply(options)
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
        test.add(sandbox, dict(options["volumes"]))
        mine.append(sandbox)
        return sandbox

    yield make
    kept = session.keeps(request.node, msb_sandbox_settings)
    with contextlib.ExitStack() as teardown:  # every sandbox is handled, even when one of them fails to stop
        for sandbox in mine:
            if kept:
                session.remember_kept(sandbox.name)
                teardown.callback(sandbox.close)
            else:
                teardown.callback(sandbox.remove)


def _is_host_image(image: str) -> bool:
    from pytest_microsandbox.images import HostRef, parse_reference  # only with --msb-cov: the image code is heavy

    return isinstance(parse_reference(image), HostRef)


@pytest.fixture
def sandbox(sandbox_factory: SandboxFactory) -> Sandbox:
    """A fresh sandbox for this test (image, memory, cpus, isolation from the marker, CLI, env or ini)."""
    return sandbox_factory()
