"""Sandbox tests run end to end with the namespace backend here, and with ``vm`` wherever hardware KVM exists (the
``vm`` marker makes tests/conftest.py skip those with the exact reason elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_microsandbox.sandbox._namespace_backend import namespaces_unavailable
from pytest_microsandbox.sync import Sandbox
from tests.homes import home_with_session_templates
from tests.timeouts import BOOT


@pytest.fixture(params=["namespace", pytest.param("vm", marks=pytest.mark.vm)])
def isolation(request: pytest.FixtureRequest) -> str:
    if request.param == "namespace" and namespaces_unavailable():
        pytest.skip(str(namespaces_unavailable()))
    return request.param


@pytest.fixture
def home(tmp_path: Path, session_templates: Path) -> Path:
    """A fresh home per test, its snapshot templates the session's."""
    return home_with_session_templates(tmp_path / "home", session_templates)


@pytest.fixture
def make_sandbox(isolation: str, home: Path) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def make(**options) -> Sandbox:
        sb = Sandbox.create(isolation=isolation, home=home, boot_timeout=BOOT, **options)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.remove()


@pytest.fixture(autouse=True)
def _vm_needs_virtiofs(request: pytest.FixtureRequest) -> None:
    """On a KVM host, vm sandboxes of the host image need the virtio-fs device; say so rather than fail."""
    from pytest_microsandbox.sandbox._vm_backend import virtiofs_available

    if "isolation" in request.fixturenames and request.getfixturevalue("isolation") == "vm" \
            and not virtiofs_available():
        pytest.skip("vm sandboxes share host directories through virtio-fs, not in this build of _vmcore yet")
