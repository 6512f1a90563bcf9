"""Sandbox tests run end to end with the namespace backend here, and with ``vm`` wherever hardware KVM exists (the
``vm`` marker makes tests/conftest.py skip those with the exact reason elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_microsandbox.sandbox._namespace import namespaces_unavailable
from pytest_microsandbox.sync import Sandbox


@pytest.fixture(params=["namespace", pytest.param("vm", marks=pytest.mark.vm)])
def isolation(request: pytest.FixtureRequest) -> str:
    if request.param == "namespace" and namespaces_unavailable():
        pytest.skip(str(namespaces_unavailable()))
    return request.param


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_sandbox(isolation: str, home: Path) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def make(**options) -> Sandbox:
        sb = Sandbox.create(isolation=isolation, home=home, boot_timeout=30, **options)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.remove()


@pytest.fixture(autouse=True)
def _vm_needs_virtiofs(request: pytest.FixtureRequest) -> None:
    """On a KVM host, vm sandboxes of the host image need the virtio-fs device; say so rather than fail."""
    from pytest_microsandbox.sandbox._vm import virtiofs_available

    if "isolation" in request.fixturenames and request.getfixturevalue("isolation") == "vm" \
            and not virtiofs_available():
        pytest.skip("vm sandboxes share host directories through virtio-fs, not in this build of _vmcore yet")
